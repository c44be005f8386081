"""The container image, checked without a Docker engine: the Dockerfile's structure (stages,
base images, the scripts its RUN steps call, non-root user, entrypoint, ports), and the runtime
stage's package list, which tools/runtime_packages.sh derives from the real binary here: every
library the binary needs must come from a package on that list.

Environment (set by CTest): JETSERVE_BIN.
"""
import os
import re
import shlex
import subprocess
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
BIN = os.environ.get("JETSERVE_BIN", os.path.join(ROOT, "build/jetserve"))
DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DEPLOY_DOC = os.path.join(ROOT, "docs/deploy.md")


def instructions(text):
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    out = []
    text = re.sub(r"\\\n", " ", text)
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(insts):
    """[(name, from_image, [instructions])] in order; the global ARGs under name None."""
    out = [(None, None, [])]
    for word, rest in insts:
        if word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            out.append((m.group(2), m.group(1), []))
        else:
            out[-1][2].append((word, rest))
    return out


def help_defaults():
    text = subprocess.run([BIN, "serve", "--help"], capture_output=True, text=True,
                          check=True).stdout
    return dict(re.findall(r"--([a-z-]+) VALUE\n.*\(default: ([^)]*)\)", text))


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOCKERFILE) as f:
            cls.stages = stages(instructions(f.read()))
        cls.by_name = {s[0]: s for s in cls.stages}
        cls.global_args = dict(
            (a.split("=", 1) + [None])[:2] for w, a in cls.stages[0][2] if w == "ARG")

    def test_variants_and_base_images(self):
        self.assertEqual(self.global_args.get("VARIANT"), "cuda")
        cuda = self.global_args.get("CUDA_VERSION")
        self.assertRegex(cuda, r"^\d+\.\d+\.\d+$")
        expect = {
            "builder-cuda": "nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04",
            "builder-cpu": "debian:12",
            "builder": "builder-${VARIANT}",
            "runtime-cuda": "nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04",
            "runtime-cpu": "debian:12-slim",
            "runtime": "runtime-${VARIANT}",
        }
        self.assertEqual({s[0]: s[1] for s in self.stages[1:]}, expect)
        self.assertEqual(self.stages[-1][0], "runtime", "the last stage is the image")

    def test_builder_runs_the_ci_scripts(self):
        runs = [r for w, r in self.by_name["builder"][2] if w == "RUN"]
        self.assertIn("bash tools/install_deps.sh --build", runs)
        build = [r for r in runs if "tools/build.sh" in r]
        self.assertEqual(len(build), 1, runs)
        self.assertIn("-DJETSERVE_BUILD_TESTS=OFF", build[0])
        self.assertIn("bash tools/runtime_packages.sh /build/jetserve > "
                      "/build/runtime-packages.txt", build[0])
        # The scripts it calls are the ones CI runs (tools/test.sh) and exist.
        with open(os.path.join(ROOT, "tools/test.sh")) as f:
            ci = f.read()
        for script in ("tools/install_deps.sh", "tools/build.sh"):
            self.assertIn(script, ci)
        self.assertTrue(os.path.exists(os.path.join(ROOT, "tools/runtime_packages.sh")))
        # install_deps.sh --build is what the builder installs: nothing test-only in it.
        r = subprocess.run(["bash", "-c", "sed -n '/^packages=(/,/^)/p' tools/install_deps.sh"],
                           cwd=ROOT, capture_output=True, text=True, check=True)
        self.assertNotIn("python3", r.stdout)

    def test_runtime_stage_holds_only_the_binary_and_its_libraries(self):
        insts = self.by_name["runtime"][2]
        copies = [r for w, r in insts if w == "COPY"]
        self.assertEqual(copies, [
            "--from=builder /build/runtime-packages.txt /tmp/runtime-packages.txt",
            "--from=builder /build/jetserve /usr/local/bin/jetserve"])
        runs = " ".join(r for w, r in insts if w == "RUN")
        self.assertIn("xargs -a /tmp/runtime-packages.txt apt-get install -y "
                      "--no-install-recommends", runs)
        self.assertIn("rm -rf /var/lib/apt/lists/*", runs)

    def test_non_root_entrypoint_and_ports(self):
        insts = self.by_name["runtime"][2]
        users = [r for w, r in insts if w == "USER"]
        self.assertEqual(len(users), 1)
        uid, _, gid = users[0].partition(":")
        self.assertTrue(uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid "
                        "(Kubernetes runAsNonRoot cannot verify a user name)")
        self.assertTrue(gid.isdigit() and int(gid) > 0)
        self.assertEqual([r for w, r in insts if w == "ENTRYPOINT"], ['["jetserve", "serve"]'])
        defaults = help_defaults()
        exposed = {int(p) for w, r in insts if w == "EXPOSE" for p in r.split()}
        self.assertEqual(exposed, {int(defaults["port"]), int(defaults["metrics-port"])})
        # The uid the manifests run as is the image's.
        with open(os.path.join(ROOT, "deploy/kubernetes/base/deployment.yaml")) as f:
            self.assertIn(f"runAsUser: {uid}", f.read())

    def test_build_args_are_documented(self):
        with open(DEPLOY_DOC) as f:
            doc = f.read()
        args = set(self.global_args)
        for name, _, insts in self.stages[1:]:
            args |= {a.split("=", 1)[0] for w, a in insts if w == "ARG"}
        self.assertEqual(args, {"VARIANT", "CUDA_VERSION", "CUDA_ARCHS"})
        for a in args:
            self.assertIn(f"`{a}`", doc, f"build arg {a} is not in docs/deploy.md")


class RuntimePackagesTest(unittest.TestCase):
    """tools/runtime_packages.sh on the binary CI just built."""

    @classmethod
    def setUpClass(cls):
        r = subprocess.run(["bash", os.path.join(ROOT, "tools/runtime_packages.sh"), BIN],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"runtime_packages.sh failed: {r.stderr}")
        cls.packages = r.stdout.split()

    def needed(self):
        out = subprocess.run(["readelf", "-d", BIN], capture_output=True, text=True,
                             check=True).stdout
        return re.findall(r"\(NEEDED\).*\[(.+)\]", out)

    def test_every_needed_library_comes_from_a_listed_package(self):
        needed = self.needed()
        self.assertGreater(len(needed), 5)
        provided = set()
        for p in self.packages:
            files = subprocess.run(["dpkg", "-L", p], capture_output=True, text=True,
                                   check=True).stdout.split()
            provided |= {os.path.basename(f) for f in files}
        for soname in needed:
            self.assertIn(soname, provided, f"{soname}: in no package of {self.packages}")

    def test_the_list_has_the_libraries_jetserve_is_built_on(self):
        # By package name prefix: sonames (and so versions in names) differ between Debian 12
        # and the Ubuntu of the CUDA images.
        for prefix in ("libgrpc++", "libprotobuf", "libspdlog", "libprometheus-cpp-pull",
                       "libicu", "libpcre2-8", "libstdc++", "libc6"):
            self.assertTrue(any(p.startswith(prefix) for p in self.packages),
                            f"no {prefix}* in {self.packages}")
        self.assertFalse([p for p in self.packages if p.endswith("-dev")],
                         "a -dev package in the runtime image")

    def test_fails_on_a_binary_with_an_unpackaged_library(self):
        # A binary needing a library that no package owns must fail the script, not be skipped.
        scratch = os.environ.get("JETSERVE_SCRATCH", "/tmp")
        os.makedirs(scratch, exist_ok=True)
        lib = os.path.join(scratch, "libjetserve_probe.so")
        exe = os.path.join(scratch, "needs_probe")
        src = os.path.join(scratch, "probe.c")
        with open(src, "w") as f:
            f.write("int probe(void) { return 1; }\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", lib, src], check=True)
        with open(src, "w") as f:
            f.write("int probe(void);\nint main(void) { return probe(); }\n")
        subprocess.run(["gcc", "-o", exe, src, f"-L{scratch}", "-ljetserve_probe",
                        f"-Wl,-rpath,{scratch}"], check=True)
        r = subprocess.run(["bash", os.path.join(ROOT, "tools/runtime_packages.sh"), exe],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("libjetserve_probe.so", r.stderr)
        self.assertIn("belongs to no package", r.stderr)


if __name__ == "__main__":
    unittest.main()
