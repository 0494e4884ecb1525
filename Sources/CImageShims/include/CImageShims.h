#ifndef CIMAGESHIMS_H
#define CIMAGESHIMS_H
#include <stddef.h>
#include <stdint.h>

/* Result codes shared by every entry point. */
enum {
    CIS_OK = 0,
    CIS_CORRUPT = 1,      /* decoder reported an error (message filled in) */
    CIS_TRUNCATED = 2,    /* data ended early */
    CIS_TOO_LARGE = 3,    /* width*height above the caller's limit; nothing allocated */
    CIS_ZERO_SIZE = 4,    /* header declares a zero width or height */
    CIS_NO_MEMORY = 5,
    CIS_UNSUPPORTED = 6
};

/* A decoded image as the container stores it; the Swift side converts it to RGB. */
typedef struct {
    int width;
    int height;
    int channels;        /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA or CMYK */
    int bits;            /* 8, or 16 (native-endian uint16 samples; PNG grayscale only) */
    int is_cmyk;         /* JPEG: 4 channels are CMYK (already un-inverted for Adobe files) */
    int progressive;     /* JPEG: progressive scan */
    uint8_t *pixels;     /* malloc'd, free with cis_free */
    char message[256];   /* decoder message on failure */
} cis_image;

void cis_free(void *p);

/* Header-only probes: fill width/height, never allocate pixels. */
int cis_jpeg_decode(const uint8_t *data, size_t len, int64_t max_pixels, cis_image *out);
int cis_png_decode(const uint8_t *data, size_t len, int64_t max_pixels, cis_image *out);
int cis_webp_decode(const uint8_t *data, size_t len, int64_t max_pixels, cis_image *out);

/* Encodes 8-bit RGB (channels 3) or RGBA (channels 4) as PNG into a malloc'd buffer. */
int cis_png_encode(const uint8_t *pixels, int width, int height, int channels,
                   uint8_t **out, size_t *out_len, char *message, size_t message_len);

/* Encodes 8-bit RGB as a baseline JPEG of the given quality (1–100) into a malloc'd buffer. */
int cis_jpeg_encode(const uint8_t *pixels, int width, int height, int quality, uint8_t **out, size_t *out_len);

/* zlib inflate of a whole buffer into a caller-sized destination; returns CIS_OK on success. */
int cis_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len);

#endif
