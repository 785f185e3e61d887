// The one schema registry of mvaccel: every op and its private backward.
// Each backend file (ops/<op>/*_cpu.cpp, *_cuda.cu) registers its kernels
// with TORCH_LIBRARY_IMPL; a CPU-only build simply leaves the .cu files out.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// `import mvaccel._C` loads this library, which runs the registrations
// below; the module itself carries no Python functions.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C",
                                          "mvaccel compiled ops", -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(mvaccel, m) {
  // Block-level map -> pixels (see csrc/ops/resample/resample.h).
  m.def(
      "block_upsample(Tensor x, int block_h, int block_w, int out_h, "
      "int out_w, str mode=\"nearest\") -> Tensor");
  m.def(
      "_block_upsample_backward(Tensor grad, int in_h, int in_w, "
      "int block_h, int block_w, str mode) -> Tensor");
  // Resize a motion field and scale its values.
  m.def(
      "mv_resize(Tensor mv, int out_h, int out_w, str mode=\"bilinear\") "
      "-> Tensor");
  m.def(
      "_mv_resize_backward(Tensor grad, int in_h, int in_w, str mode) "
      "-> Tensor");
  // Optical Flow guided Feature: Sobel x, Sobel y and temporal difference
  // (see csrc/ops/off/off.h).
  m.def("off_gradients(Tensor f_t, Tensor f_prev) -> Tensor");
  m.def("_off_gradients_backward(Tensor grad) -> (Tensor, Tensor)");
  m.def("off_gradients_stack(Tensor f) -> Tensor");
  m.def("_off_gradients_stack_backward(Tensor grad) -> Tensor");
  // TVNet: a block of unrolled TV-L1 iterations with trainable filters
  // (see csrc/ops/tvnet/tvnet.h).
  m.def(
      "tvnet_iterations(Tensor u, Tensor p, Tensor warped, Tensor wf, "
      "Tensor wb, float l_t, float theta, float taut, float eps, "
      "float grad_eps, bool save_states) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_tvnet_iterations_backward(Tensor grad_u, Tensor grad_p, "
      "Tensor states, Tensor u_out, Tensor warped, Tensor wf, Tensor wb, "
      "float l_t, float theta, float taut, float eps, float grad_eps) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Whole TV-L1 solve for a batch of grey pairs (see csrc/ops/tvl1/tvl1.h).
  m.def(
      "tvl1_flow(Tensor I0, Tensor I1, Tensor? init, float tau, float lambda_, "
      "float theta, int nscales, float scale_step, int warps, float epsilon, "
      "int inner_iterations, int outer_iterations, int median, int warp, "
      "int stop_check, int min_size, float dual_eps, float grad_eps) -> "
      "Tensor");
}
