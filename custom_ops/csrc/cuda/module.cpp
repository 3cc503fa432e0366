// The Python module of the CUDA kernels: importing custom_ops._C_cuda (after custom_ops._C,
// which defines the operators) registers their CUDA implementations.

#include <Python.h>

static struct PyModuleDef custom_ops_cuda_module = {
    PyModuleDef_HEAD_INIT,
    "_C_cuda",
    "custom_ops' CUDA kernels: importing registers them with torch.ops.custom_ops.",
    -1,
    nullptr,
};

PyMODINIT_FUNC PyInit__C_cuda(void) {
  return PyModule_Create(&custom_ops_cuda_module);
}
