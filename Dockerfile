# jetserve container image (CPU build).
#   docker build -t jetserve .
#   docker run -p 50051:50051 -p 9090:9090 -v /models:/models jetserve \
#       --model /models/Jet-Nemotron-2B --host 0.0.0.0 --port 50051 --metrics-port 9090
# The builder runs the same install and build scripts as CI (tools/install_deps.sh,
# tools/build.sh); the runtime stage holds only the binary and its shared libraries.

FROM debian:12 AS builder
WORKDIR /src
COPY tools/install_deps.sh tools/install_deps.sh
RUN bash tools/install_deps.sh --build
COPY . .
RUN JETSERVE_BUILD_DIR=/build bash tools/build.sh -DJETSERVE_BUILD_TESTS=OFF \
    && strip /build/jetserve

FROM debian:12-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
         libgrpc++1.51 libprotobuf32 libabsl20220623 libspdlog1.10 libfmt9 \
         libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libpcre2-8-0 libicu72 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/jetserve --create-home jetserve
COPY --from=builder /build/jetserve /usr/local/bin/jetserve
USER 10001
# The default model (random weights) is generated here on first use when --model is not given.
ENV JETSERVE_CACHE_DIR=/var/lib/jetserve/cache
EXPOSE 50051 9090
ENTRYPOINT ["jetserve", "serve"]
