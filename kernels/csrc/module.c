/* The compiled CPU kernels (selective_scan_cpu.c, causal_conv1d_cpu.c) are plain C functions called
 * through ctypes (kernels/cpu_lib.py); this empty module only makes the shared library a valid extension
 * module, so that setuptools builds and installs it with the project. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef cpu_kernels_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_cpu_kernels",
    .m_doc = "Compiled CPU kernels (selective scan, causal conv1d), called through ctypes.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__cpu_kernels(void) { return PyModule_Create(&cpu_kernels_module); }
