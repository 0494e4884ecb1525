/* libFuzzer harness for the C image shims (Sources/CImageShims) on their own, built with clang
   -fsanitize=fuzzer,address by tools/fuzz/run.sh: every decoder sees every input (each refuses
   foreign bytes in its first few), a decoded image is read whole and encoded again, and zlib
   inflate runs into a buffer sized from the input. */
#include "CImageShims.h"
#include <stdint.h>
#include <stdlib.h>

typedef int (*decoder)(const uint8_t *, size_t, int64_t, cis_image *);

static volatile unsigned sink;

static void check(const cis_image *img) {
    size_t n = (size_t)img->width * (size_t)img->height * (size_t)img->channels * (size_t)(img->bits / 8);
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) sum += img->pixels[i];   /* ASan: the buffer holds all of it */
    sink = sum;
    if (img->bits == 8 && !img->is_cmyk && (img->channels == 3 || img->channels == 4) &&
        (int64_t)img->width * img->height <= 256 * 256) {
        uint8_t *out = NULL;
        size_t len = 0;
        char message[128];
        if (cis_png_encode(img->pixels, img->width, img->height, img->channels, &out, &len, message,
                           sizeof message) == CIS_OK)
            cis_free(out);
        if (img->channels == 3 && cis_jpeg_encode(img->pixels, img->width, img->height, 90, &out, &len) == CIS_OK)
            cis_free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const decoder decoders[] = {cis_jpeg_decode, cis_png_decode, cis_webp_decode};
    for (size_t d = 0; d < sizeof decoders / sizeof decoders[0]; d++) {
        cis_image img;
        if (decoders[d](data, size, 1 << 22, &img) == CIS_OK) check(&img);
        cis_free(img.pixels);
    }
    size_t cap = size * 4 < (1 << 20) ? size * 4 : (1 << 20);
    uint8_t *dst = malloc(cap + 1);
    if (dst) {
        cis_inflate(data, size, dst, cap);
        free(dst);
    }
    return 0;
}
