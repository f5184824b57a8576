/*
 * edge_derain CUDA kernels: plain C launch API.
 *
 * Includers need no CUDA headers: device pointers and the stream are passed as void*. The library is
 * built with the CUDA runtime linked statically, so it loads (e.g. through ctypes) on machines without
 * libcudart.so and without a GPU; only launches need a device.
 */
#ifndef EDGE_DERAIN_KERNELS_H
#define EDGE_DERAIN_KERNELS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define EDR_API __declspec(dllexport)
#else
#define EDR_API __attribute__((visibility("default")))
#endif

/* Version of this C API and of the kernels' numerics; CMake reads the project version from here. */
#define EDR_KERNELS_VERSION_STRING "0.2.0"

typedef enum { EDR_FLOAT32 = 0, EDR_FLOAT16 = 1 } edr_dtype;

#define EDR_MAX_DILATIONS 8

/*
 * Pixel-wise dilation filter (EfficientDeRain), MODELS_SPEC section 1:
 *   out[n, C*m + c, y, x] = sum_{i,j in 0..2} kernels[n, 9c + 3i + j, y, x]
 *                                             * image[n, c, y + (i-1)*d_m, x + (j-1)*d_m]
 * with zero padding outside the image and FP32 accumulation.
 *
 * image (N, C, H, W), kernels (N, 9C, H, W), output (N, C*num_dilations, H, W); all contiguous NCHW
 * device buffers of `dtype` (an edr_dtype value). `dilations` is a HOST array of num_dilations
 * (1..EDR_MAX_DILATIONS) values, each >= 1. `stream` is a cudaStream_t (NULL = legacy default stream).
 *
 * Returns 0 on success or a cudaError_t value (cudaErrorInvalidValue = 1 for bad arguments, checked
 * before any CUDA call); never throws. The launch is asynchronous on `stream`.
 */
EDR_API int edr_dilation_filter(const void* image, const void* kernels, void* output, int dtype, int n, int c,
                                int h, int w, const int* dilations, int num_dilations, void* stream);

/*
 * The same computation on HOST buffers, running the kernel's own per-pixel code on the CPU. It lets
 * the indexing, padding and channel layouts be verified on machines without a GPU; it is slow and not
 * meant for inference. Same arguments and return codes as edr_dilation_filter, minus the stream.
 */
EDR_API int edr_dilation_filter_host(const void* image, const void* kernels, void* output, int dtype, int n,
                                     int c, int h, int w, const int* dilations, int num_dilations);

/* Transposed attention limits: channels per head (the spec's models use 8..96; larger heads would not
 * fit the kernels' shared-memory tiles on Turing), and branches (dense + sparse ones) per call. */
#define EDR_MAX_HEAD_CHANNELS 96
#define EDR_MAX_ATTENTION_BRANCHES 8

/* Branch sets of the transposed attention (MODELS_SPEC section 2.2). */
typedef enum {
    EDR_ATTENTION_DENSE = 0,  /* one dense softmax; no topk                               */
    EDR_ATTENTION_SPARSE = 1, /* one top-k softmax; one topk value                        */
    EDR_ATTENTION_DUAL = 2,   /* dense + one top-k softmax (DDSA); one topk value          */
    EDR_ATTENTION_MULTI = 3   /* one top-k softmax per topk value (DRSformer); 1..8 values */
} edr_attention_mode;

/*
 * Transposed (channel) attention, MODELS_SPEC section 2. Per batch item n and head g (head-major
 * contiguous channel split, C_h = C / num_heads), with L = H*W, i and j channels of the head:
 *   P[i, j] = temperature[g] * <q_i, k_j> / (max(|q_i|, eps) * max(|k_j|, eps))   (norms over L)
 *   A_m = softmax_j(P)                                     dense branch
 *       = softmax_j(P where P >= t_i else -inf)            sparse branch, t_i = topk_m-th largest of row i
 *   out[n, g*C_h + i, :] = sum_j (sum_m w_m A_m[i, j]) * v[n, g*C_h + j, :]
 * Ties at t_i keep every tied entry (threshold semantics, spec section 2.3).
 *
 * q, k, v, output: contiguous NCHW device buffers of `dtype`. temperature (num_heads,) and branch_weights
 * (one per branch; NULL means weight 1 and is allowed only for dense/sparse) are device buffers of
 * `param_dtype`, read on the device, so refitting them needs no re-enqueue. `topk` is a HOST array of
 * num_topk values in [1, C_h] (0 values for dense). C_h <= EDR_MAX_HEAD_CHANNELS.
 *
 * Norms and Gram matrices are accumulated in FP32 whatever `dtype` (the squares of 1080p-sized rows
 * overflow FP16; spec section 2.4), split over L into partial sums that are reduced in a fixed order, so
 * results are deterministic. `workspace` is device memory of at least
 * edr_transposed_attention_workspace_size(...) bytes (16-byte aligned). That size never decreases as n,
 * h or w grow, so the size for a profile's largest shape serves every shape of the profile.
 *
 * Returns 0 on success or a cudaError_t value (cudaErrorInvalidValue = 1 for bad arguments, checked
 * before any CUDA call); never throws. Four kernel launches, asynchronous on `stream`.
 */
EDR_API size_t edr_transposed_attention_workspace_size(int n, int c, int h, int w, int num_heads);

EDR_API int edr_transposed_attention(const void* q, const void* k, const void* v, const void* temperature,
                                     const void* branch_weights, void* output, int dtype, int param_dtype, int n,
                                     int c, int h, int w, int num_heads, int mode, const int* topk, int num_topk,
                                     float eps, void* workspace, size_t workspace_size, void* stream);

/*
 * The same computation on HOST buffers (all of them, temperature and branch_weights included), through
 * the same split-K partial sums and the same per-row selection and softmax code as the kernels, with a
 * host-allocated workspace. For verification without a GPU; slow.
 */
EDR_API int edr_transposed_attention_host(const void* q, const void* k, const void* v, const void* temperature,
                                          const void* branch_weights, void* output, int dtype, int param_dtype,
                                          int n, int c, int h, int w, int num_heads, int mode, const int* topk,
                                          int num_topk, float eps);

/* EDR_KERNELS_VERSION_STRING, as compiled into the library. */
EDR_API const char* edr_kernels_version(void);

/* Human-readable text for a code returned above (cudaGetErrorString; needs no GPU). */
EDR_API const char* edr_error_string(int code);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_DERAIN_KERNELS_H */
