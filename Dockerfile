# jetserve container image. docs/deploy.md explains the choices; in short:
#   docker build -t jetserve:cuda .                          # NVIDIA CUDA images (default)
#   docker build -t jetserve:cpu --build-arg VARIANT=cpu .   # Debian 12 images, no CUDA
#   docker run -p 50051:50051 -p 8000:8000 -v /models:/models jetserve:cpu \
#       --model /models/Jet-Nemotron-2B --host 0.0.0.0
#
# Build arguments:
#   VARIANT       cuda (builder nvidia/cuda:CUDA_VERSION-devel-ubuntu24.04, runtime the matching
#                 -runtime image) or cpu (builder debian:12, runtime debian:12-slim)
#   CUDA_VERSION  the nvidia/cuda image tag's version (cuda variant only)
#   CUDA_ARCHS    CMAKE_CUDA_ARCHITECTURES for the CUDA kernels (cuda variant only; the
#                 builder's nvcc turns the CUDA backend on: `serve --device cuda`; the runtime
#                 image supplies libcudart and libcublasLt, which jetserve dlopens)
#
# The builder runs the same scripts as CI (tools/install_deps.sh --build, tools/build.sh), and
# the runtime stage installs exactly the packages tools/runtime_packages.sh derives from the
# built binary's NEEDED entries. tests/deploy/test_image.py checks this file's structure.

ARG VARIANT=cuda
ARG CUDA_VERSION=12.8.1

FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS builder-cuda
FROM debian:12 AS builder-cpu

FROM builder-${VARIANT} AS builder
ARG VARIANT
ARG CUDA_ARCHS=90
WORKDIR /src
COPY tools/install_deps.sh tools/install_deps.sh
RUN bash tools/install_deps.sh --build
COPY . .
RUN cuda_flags=$([ "$VARIANT" = cuda ] && echo "-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHS" || true) \
    && JETSERVE_BUILD_DIR=/build bash tools/build.sh -DJETSERVE_BUILD_TESTS=OFF $cuda_flags \
    && strip /build/jetserve \
    && bash tools/runtime_packages.sh /build/jetserve > /build/runtime-packages.txt

FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04 AS runtime-cuda
FROM debian:12-slim AS runtime-cpu

FROM runtime-${VARIANT} AS runtime
COPY --from=builder /build/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
    && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
    && groupadd --system --gid 10001 jetserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/jetserve --create-home \
         jetserve
COPY --from=builder /build/jetserve /usr/local/bin/jetserve
USER 10001:10001
# The default model (random weights) is generated here on first use when --model is not given.
ENV JETSERVE_CACHE_DIR=/var/lib/jetserve/cache
# gRPC (--port) and Prometheus /metrics (--metrics-port), at their defaults.
EXPOSE 50051 8000
ENTRYPOINT ["jetserve", "serve"]
