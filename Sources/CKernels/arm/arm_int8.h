/* What the arm64 int8 levels (dotprod.c, i8mm.c) share: the blocking of their prefill GEMMs and
 * the reading of one weight group. */
#pragma once
#include "../ck_table.h"

#if defined(__aarch64__)
#include <arm_neon.h>

/* 32-column panels in sub-panels of 8 (one register tile's width), 4 activation rows per tile,
 * K in blocks of 32 groups (32 KB of panel per block stays in L1 for every tile). */
#define QP_COLS 32
#define QP_SUB 8
#define QP_ROWS 4
#define QP_GROUPS 32

/* Group g of weight row `row` (NULL: a missing column, zeros) as two s8 vectors, elements 0–15
 * and 16–31; a short last 8-bit group reads only its own bytes, the rest are zero. */
static inline __attribute__((always_inline)) void load_group(int format, int64_t K, const void *row, int64_t g, int8x16_t *a,
                       int8x16_t *b) {
    if (!row) {
        *a = *b = vdupq_n_s8(0);
    } else if (format == CK_Q8) {
        const int8_t *p = (const int8_t *)row + g * 32;
        const int len = ck_group_length(K, g);
        if (len == 32) {
            *a = vld1q_s8(p);
            *b = vld1q_s8(p + 16);
        } else {
            int8_t pad[32];
            for (int i = 0; i < 32; i++) pad[i] = i < len ? p[i] : 0;
            *a = vld1q_s8(pad);
            *b = vld1q_s8(pad + 16);
        }
    } else {
        uint8x16_t v = vld1q_u8((const uint8_t *)row + g * 16);
        const int8x16_t eight = vdupq_n_s8(8);
        *a = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0x0F))), eight);
        *b = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(v, 4)), eight);
    }
}
/* A sub-panel narrower than QP_SUB columns runs its tile on a local copy of its y rows and bias
 * (the tile always stores QP_SUB columns): narrow_tile_in fills the copy (with y's partial sums
 * unless this is the first K block) and points y, ldy and bias at it; narrow_tile_out writes the
 * live columns back. */
typedef struct {
    float y[QP_ROWS * QP_SUB], bias[QP_SUB];
} narrow_tile;

static inline void narrow_tile_in(narrow_tile *t, int first, int cols, int mr, float **y, int64_t *ldy,
                                  const float **bias) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < QP_SUB; j++) t->y[r * QP_SUB + j] = !first && j < cols ? (*y)[r * *ldy + j] : 0.0f;
    if (*bias) {
        for (int j = 0; j < QP_SUB; j++) t->bias[j] = j < cols ? (*bias)[j] : 0.0f;
        *bias = t->bias;
    }
    *y = t->y;
    *ldy = QP_SUB;
}

static inline void narrow_tile_out(const narrow_tile *t, int cols, int mr, float *y, int64_t ldy) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < cols; j++) y[r * ldy + j] = t->y[r * QP_SUB + j];
}
#endif
