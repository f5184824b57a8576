/*
 * edge_derain CUDA kernels: plain C launch API.
 *
 * Includers need no CUDA headers: device pointers and the stream are passed as void*. The library is
 * built with the CUDA runtime linked statically, so it loads (e.g. through ctypes) on machines without
 * libcudart.so and without a GPU; only launches need a device.
 */
#ifndef EDGE_DERAIN_KERNELS_H
#define EDGE_DERAIN_KERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define EDR_API __declspec(dllexport)
#else
#define EDR_API __attribute__((visibility("default")))
#endif

/* Version of this C API and of the kernels' numerics; CMake reads the project version from here. */
#define EDR_KERNELS_VERSION_STRING "0.1.0"

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

/* EDR_KERNELS_VERSION_STRING, as compiled into the library. */
EDR_API const char* edr_kernels_version(void);

/* Human-readable text for a code returned above (cudaGetErrorString; needs no GPU). */
EDR_API const char* edr_error_string(int code);

#ifdef __cplusplus
}
#endif

#endif /* EDGE_DERAIN_KERNELS_H */
