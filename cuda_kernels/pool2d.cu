// Pooling kernels over NCHW float32 tensors whose channels may be a slice of a larger buffer.
//
// Every tensor is described by a base pointer and a batch stride (in elements): image n starts at
// ptr + n * bstride and its C*H*W values are contiguous (a channel slice of an NCHW buffer is).
// Launch: 1-D grid-stride loops; the host picks grid and block (see ios_ray/runtime/gpu/kernels.py).

extern "C" __global__ void max_pool2d(const float* __restrict__ x, long long x_bstride,
                                      float* __restrict__ y, long long y_bstride,
                                      int N, int C, int H, int W, int OH, int OW,
                                      int kh, int kw, int sh, int sw, int ph, int pw) {
    const long long total = (long long)N * C * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const int c = (int)((i / ((long long)OW * OH)) % C);
        const int n = (int)(i / ((long long)OW * OH * C));
        const float* plane = x + n * x_bstride + (long long)c * H * W;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        float best = __int_as_float(0xff800000);  // -inf: padding acts as -inf, so it never wins
        for (int dh = 0; dh < kh; ++dh) {
            const int h = h0 + dh;
            if (h < 0 || h >= H) continue;
            for (int dw = 0; dw < kw; ++dw) {
                const int w = w0 + dw;
                if (w < 0 || w >= W) continue;
                best = fmaxf(best, plane[h * W + w]);
            }
        }
        y[n * y_bstride + ((long long)c * OH + oh) * OW + ow] = best;
    }
}

// Average pooling. With count_include_pad (PyTorch's default) each window divides by kh * kw, the
// padding counted; without it (ONNX's default) by the number of its input elements (at least one: the
// host keeps pads below the kernel).
extern "C" __global__ void avg_pool2d(const float* __restrict__ x, long long x_bstride,
                                      float* __restrict__ y, long long y_bstride,
                                      int N, int C, int H, int W, int OH, int OW,
                                      int kh, int kw, int sh, int sw, int ph, int pw, int count_include_pad) {
    const long long total = (long long)N * C * OH * OW;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total;
         i += (long long)gridDim.x * blockDim.x) {
        const int ow = (int)(i % OW);
        const int oh = (int)((i / OW) % OH);
        const int c = (int)((i / ((long long)OW * OH)) % C);
        const int n = (int)(i / ((long long)OW * OH * C));
        const float* plane = x + n * x_bstride + (long long)c * H * W;
        const int h0 = oh * sh - ph, w0 = ow * sw - pw;
        float acc = 0.0f;
        int count = 0;
        for (int dh = 0; dh < kh; ++dh) {
            const int h = h0 + dh;
            if (h < 0 || h >= H) continue;
            for (int dw = 0; dw < kw; ++dw) {
                const int w = w0 + dw;
                if (w < 0 || w >= W) continue;
                acc += plane[h * W + w];
                ++count;
            }
        }
        const int divisor = count_include_pad ? kh * kw : (count > 0 ? count : 1);
        y[n * y_bstride + ((long long)c * OH + oh) * OW + ow] = acc / (float)divisor;
    }
}

// Global average pooling: one warp per (n, c) plane; y has shape (N, C, 1, 1) within its slice.
extern "C" __global__ void global_avg_pool2d(const float* __restrict__ x, long long x_bstride,
                                             float* __restrict__ y, long long y_bstride,
                                             int N, int C, int HW) {
    const int warps_per_block = blockDim.x / 32;
    const long long plane = (long long)blockIdx.x * warps_per_block + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (plane >= (long long)N * C) return;
    const int n = (int)(plane / C);
    const int c = (int)(plane % C);
    const float* src = x + n * x_bstride + (long long)c * HW;
    float acc = 0.0f;
    for (int j = lane; j < HW; j += 32) acc += src[j];
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, off);
    if (lane == 0) y[n * y_bstride + c] = acc / (float)HW;
}
