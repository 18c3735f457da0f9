// edgetool delta kernel: out = base + delta over one packed refit buffer, in one launch.
//
// Packed layout (edgetool.runtime.bundle.weights.PackedLayout): an int8 region of weight codes,
// then a float32 region of per-channel tensors; every tensor starts on a 256-byte
// boundary, so both regions are whole multiples of 16 bytes and each thread moves one
// 16-byte vector:
//   int8 region:   4 x __vadd4 per vector - per-byte add, wrapping mod 256, which is
//                  exactly q_sub = int8(q_base + delta) (DESIGN.md rule 5);
//   float region:  4 x float add, f_sub = f_base + delta.
// out may alias neither base nor delta. base stays untouched, so any switch (and a
// switch back to the base network) is one launch and idempotent.

#include <stdint.h>
#include <cuda_fp16.h>

extern "C" __global__ void edgetool_delta_apply(const uint4* __restrict__ base,
                                                const uint4* __restrict__ delta,
                                                uint4* __restrict__ out,
                                                unsigned int n_int8_vec,
                                                unsigned int n_total_vec)
{
    const unsigned int stride = blockDim.x * gridDim.x;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n_total_vec; i += stride) {
        const uint4 b = base[i];
        const uint4 d = delta[i];
        uint4 o;
        if (i < n_int8_vec) {
            o.x = __vadd4(b.x, d.x);
            o.y = __vadd4(b.y, d.y);
            o.z = __vadd4(b.z, d.z);
            o.w = __vadd4(b.w, d.w);
        } else {
            o.x = __float_as_uint(__uint_as_float(b.x) + __uint_as_float(d.x));
            o.y = __float_as_uint(__uint_as_float(b.y) + __uint_as_float(d.y));
            o.z = __float_as_uint(__uint_as_float(b.z) + __uint_as_float(d.z));
            o.w = __float_as_uint(__uint_as_float(b.w) + __uint_as_float(d.w));
        }
        out[i] = o;
    }
}

// fp16 engines (devices without int8, e.g. Jetson Nano/TX2): dequantize the int8 region
// of a packed buffer into half-precision weights, one launch for every weight tensor.
// Grid: y = tensor index, x = elements of that tensor.  channel_div[t] = elements per output channel of tensor t; scale_off[t] = index of
// its first per-channel scale in scales; dst_off[t] = element offset of tensor t in out;
// src_off[t] = byte offset of tensor t in the packed buffer.
extern "C" __global__ void edgetool_dequantize_fp16(const int8_t* __restrict__ packed,
                                                    const float* __restrict__ scales,
                                                    const int* __restrict__ src_off,
                                                    const int* __restrict__ dst_off,
                                                    const int* __restrict__ numel,
                                                    const int* __restrict__ channel_div,
                                                    const int* __restrict__ scale_off,
                                                    int n_tensors,
                                                    unsigned short* __restrict__ out)
{
    const int t = blockIdx.y;
    if (t >= n_tensors) return;
    const int n = numel[t];
    const int8_t* src = packed + src_off[t];
    const float* sc = scales + scale_off[t];
    unsigned short* dst = out + dst_off[t];
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        const float v = (float)src[i] * sc[i / channel_div[t]];
        dst[i] = __half_as_ushort(__float2half_rn(v));
    }
}
