// Helpers shared by the kernel files: element conversions usable from host and device code, so each
// kernel's host path (edr_*_host) runs the same per-element code as the GPU.
#ifndef EDGE_DERAIN_KERNELS_COMMON_CUH
#define EDGE_DERAIN_KERNELS_COMMON_CUH

#include <cuda_fp16.h>

namespace edr {

__host__ __device__ __forceinline__ float to_float(float v) { return v; }
__host__ __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

template <typename T>
__host__ __device__ __forceinline__ T from_float(float v);
template <>
__host__ __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__host__ __device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }

} // namespace edr

#endif // EDGE_DERAIN_KERNELS_COMMON_CUH
