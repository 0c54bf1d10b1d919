// The Python module of mm_efficientconv's compiled CPU ops (mm_efficientconv._ext).
#include <torch/extension.h>

#include <vector>

namespace mmeff {
// doconv_compose.cpp
torch::Tensor compose_forward(const torch::Tensor& W, const torch::Tensor& D, int64_t groups);
std::vector<torch::Tensor> compose_backward(const torch::Tensor& gK, const torch::Tensor& W,
                                            const torch::Tensor& D, int64_t groups);
// batch_norm_act.cpp
std::vector<torch::Tensor> batch_norm_act_forward(const torch::Tensor& x,
                                                  const torch::Tensor& weight,
                                                  const torch::Tensor& bias, double eps,
                                                  int64_t act);
std::vector<torch::Tensor> batch_norm_act_backward(const torch::Tensor& dz, const torch::Tensor& x,
                                                   const torch::Tensor& weight,
                                                   const torch::Tensor& bias,
                                                   const torch::Tensor& mean,
                                                   const torch::Tensor& invstd, int64_t act,
                                                   bool need_input_grad);
}  // namespace mmeff

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mm_efficientconv compiled ops (CPU)";
  m.def("doconv_compose_forward", &mmeff::compose_forward,
        "DO-Conv kernel composition (3x3, D_mul=9)");
  m.def("doconv_compose_backward", &mmeff::compose_backward,
        "Gradients of the DO-Conv kernel composition");
  m.def("batch_norm_act_forward", &mmeff::batch_norm_act_forward,
        "Training-mode batch norm + activation (float32): (z, mean, var, invstd)");
  m.def("batch_norm_act_backward", &mmeff::batch_norm_act_backward,
        "Gradients of batch_norm_act_forward: (dx, dweight, dbias)");
}
