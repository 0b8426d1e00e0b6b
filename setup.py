"""What pyproject.toml cannot express: the top-level ``conf/`` folder installed as ``ghrs/conf`` (Hydra's
config folder for an installed, non-editable package), and the compiled CPU selective scan
and causal convolution (``kernels/csrc/*.c``), built by the install itself. It is optional: without a C compiler
the install still succeeds and the scan uses its slower torch core."""

from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CONF_PACKAGES = ["ghrs.conf"] + sorted(
    "ghrs.conf." + ".".join(d.relative_to(HERE / "conf").parts)
    for d in (HERE / "conf").rglob("*") if d.is_dir() and any(d.glob("*.yaml"))
)



class BuildExt(build_ext):
    """Optimisation flags for GCC/Clang (``omp simd`` hints need -fopenmp-simd, no OpenMP runtime)."""

    def build_extensions(self):
        if self.compiler.compiler_type == "unix":
            for ext in self.extensions:
                ext.extra_compile_args = ["-O3", "-fopenmp-simd"]
        super().build_extensions()


setup(
    ext_modules=[
        Extension(
            "kernels._cpu_kernels",
            [f"kernels/csrc/{name}.c" for name in ("module", "selective_scan_cpu", "causal_conv1d_cpu")],
            depends=["kernels/csrc/sscan_common.h"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
    packages=find_packages(include=["ghrs*", "ssm*", "kernels*"]) + CONF_PACKAGES,
    package_dir={"ghrs.conf": "conf"},
    package_data={name: ["*.yaml"] for name in CONF_PACKAGES},
)
