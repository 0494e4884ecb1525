// C side of the image decoders: every libjpeg/libpng call runs under setjmp so that a
// corrupt file turns into an error code instead of exit() or abort().
#include "CImageShims.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <zlib.h>
#include <dlfcn.h>
#include <pthread.h>

void cis_free(void *p) { free(p); }

static void set_msg(cis_image *out, const char *msg) {
    snprintf(out->message, sizeof(out->message), "%s", msg);
}

static int check_size(cis_image *out, int64_t w, int64_t h, int64_t max_pixels) {
    if (w <= 0 || h <= 0) return CIS_ZERO_SIZE;
    if (w > 1000000 || h > 1000000 || w * h > max_pixels) return CIS_TOO_LARGE;
    (void)out;
    return CIS_OK;
}

/* ---------------- JPEG ---------------- */

struct jerr_ctx {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
};

static void jpeg_fail(j_common_ptr cinfo) {
    struct jerr_ctx *err = (struct jerr_ctx *)cinfo->err;
    longjmp(err->jump, 1);
}

static void jpeg_message(j_common_ptr cinfo, int level) {
    struct jerr_ctx *err = (struct jerr_ctx *)cinfo->err;
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        /* Premature end of data: libjpeg would pad with grey; treat as truncation like PIL. */
        err->truncated = 1;
        longjmp(err->jump, 1);
    }
}

static void jpeg_silent(j_common_ptr cinfo) { (void)cinfo; }

int cis_jpeg_decode(const uint8_t *data, size_t len, int64_t max_pixels, cis_image *out) {
    struct jpeg_decompress_struct cinfo;
    struct jerr_ctx jerr;
    uint8_t *volatile pixels = NULL;
    volatile int created = 0;
    memset(out, 0, sizeof(*out));
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_fail;
    jerr.pub.emit_message = jpeg_message;
    jerr.pub.output_message = jpeg_silent;
    jerr.truncated = 0;
    if (setjmp(jerr.jump)) {
        if (jerr.truncated) {
            set_msg(out, "JPEG data ends before the image is complete");
        } else {
            char buf[JMSG_LENGTH_MAX];
            (*cinfo.err->format_message)((j_common_ptr)&cinfo, buf);
            set_msg(out, buf);
        }
        if (created) jpeg_destroy_decompress(&cinfo);
        free(pixels);
        out->pixels = NULL;
        /* A header that ends early is also a truncation. */
        if (jerr.truncated || jerr.pub.msg_code == JERR_INPUT_EMPTY || jerr.pub.msg_code == JERR_INPUT_EOF)
            return CIS_TRUNCATED;
        if (jerr.pub.msg_code == JERR_EMPTY_IMAGE) return CIS_ZERO_SIZE;
        return CIS_CORRUPT;
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        set_msg(out, "no JPEG image found");
        jpeg_destroy_decompress(&cinfo);
        return CIS_TRUNCATED;
    }
    out->width = (int)cinfo.image_width;
    out->height = (int)cinfo.image_height;
    int rc = check_size(out, cinfo.image_width, cinfo.image_height, max_pixels);
    if (rc != CIS_OK) {
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    out->progressive = cinfo.progressive_mode ? 1 : 0;
    int adobe_inverted = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo.out_color_space = JCS_GRAYSCALE;
        out->channels = 1;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;
        out->channels = 4;
        out->is_cmyk = 1;
        adobe_inverted = cinfo.saw_Adobe_marker ? 1 : 0;
        break;
    default:
        cinfo.out_color_space = JCS_RGB;
        out->channels = 3;
        break;
    }
    /* PIL's defaults: accurate integer IDCT, fancy upsampling. */
    cinfo.dct_method = JDCT_ISLOW;
    cinfo.do_fancy_upsampling = TRUE;
    jpeg_start_decompress(&cinfo);
    if ((int)cinfo.output_components != out->channels) {
        set_msg(out, "unexpected JPEG component count");
        jpeg_destroy_decompress(&cinfo);
        return CIS_UNSUPPORTED;
    }
    size_t stride = (size_t)out->width * (size_t)out->channels;
    pixels = (uint8_t *)malloc(stride * (size_t)out->height);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        return CIS_NO_MEMORY;
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = pixels + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (adobe_inverted) {
        size_t n = stride * (size_t)out->height;
        for (size_t i = 0; i < n; i++) pixels[i] = (uint8_t)(255 - pixels[i]);
    }
    out->bits = 8;
    out->pixels = pixels;
    return CIS_OK;
}

/* ---------------- PNG ---------------- */

struct png_src {
    const uint8_t *data;
    size_t len;
    size_t pos;
    int truncated;
};

struct png_err_ctx {
    cis_image *out;
};

static void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
    struct png_src *src = (struct png_src *)png_get_io_ptr(png);
    if (n > src->len - src->pos) {
        src->truncated = 1;
        png_error(png, "PNG data ends before the image is complete");
    }
    memcpy(dst, src->data + src->pos, n);
    src->pos += n;
}

static void png_fail(png_structp png, png_const_charp msg) {
    cis_image *out = (cis_image *)png_get_error_ptr(png);
    if (out) set_msg(out, msg);
    png_longjmp(png, 1);
}

static void png_warn(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

int cis_png_decode(const uint8_t *data, size_t len, int64_t max_pixels, cis_image *out) {
    memset(out, 0, sizeof(*out));
    struct png_src src = {data, len, 0, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, out, png_fail, png_warn);
    if (!png) return CIS_NO_MEMORY;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return CIS_NO_MEMORY;
    }
    uint8_t *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return ((volatile struct png_src *)&src)->truncated ? CIS_TRUNCATED : CIS_CORRUPT;
    }
    /* Refuse only by our own limit; libpng's default (1e6 per side) would reject earlier
       with a less specific message. */
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff);
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w = 0, h = 0;
    int depth = 0, color = 0, interlace = 0;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    out->width = (int)(w > 0x7fffffff ? 0x7fffffff : w);
    out->height = (int)(h > 0x7fffffff ? 0x7fffffff : h);
    int rc = check_size(out, (int64_t)w, (int64_t)h, max_pixels);
    if (rc != CIS_OK) {
        png_destroy_read_struct(&png, &info, NULL);
        return rc;
    }
    int has_trns = png_get_valid(png, info, PNG_INFO_tRNS) ? 1 : 0;
    int bits = 8;
    if (color == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png);
        if (has_trns) png_set_tRNS_to_alpha(png);
    } else if (color == PNG_COLOR_TYPE_GRAY) {
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (depth == 16) {
            bits = 16; /* PIL keeps I;16 and clips on convert("RGB") */
            const uint16_t probe = 1;
            if (*(const uint8_t *)&probe == 1) png_set_swap(png); /* PNG is big-endian */
        } else if (has_trns) {
            png_set_tRNS_to_alpha(png);
        }
    } else {
        if (depth == 16) png_set_strip_16(png); /* PIL reads the high byte */
        if (has_trns && color == PNG_COLOR_TYPE_RGB) png_set_tRNS_to_alpha(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    size_t expect = (size_t)w * (size_t)channels * (size_t)(bits / 8);
    if (rowbytes != expect || channels < 1 || channels > 4) {
        set_msg(out, "unexpected PNG layout after conversion");
        png_destroy_read_struct(&png, &info, NULL);
        return CIS_UNSUPPORTED;
    }
    pixels = (uint8_t *)malloc(rowbytes * (size_t)h);
    rows = (png_bytep *)malloc(sizeof(png_bytep) * (size_t)h);
    if (!pixels || !rows) {
        png_destroy_read_struct(&png, &info, NULL);
        free(pixels);
        free(rows);
        return CIS_NO_MEMORY;
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = pixels + rowbytes * y;
    png_read_image(png, rows);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    out->channels = channels;
    out->bits = bits;
    out->pixels = pixels;
    return CIS_OK;
}

/* ---------------- WebP ---------------- */

/* libwebp is loaded when the first WebP file arrives, from its runtime library (Debian's libwebp7,
 * Homebrew's webp), so that building needs no WebP headers and JPEG/PNG work without it. The
 * declarations below are libwebp's decode ABI (decode.h, WEBP_DECODER_ABI_VERSION 0x0209, stable
 * across libwebp 0.5–1.x): WebPGetFeatures is an inline wrapper of WebPGetFeaturesInternal. */
enum { WEBP_ABI = 0x0209, VP8_OK = 0, VP8_SUSPENDED = 5, VP8_NOT_ENOUGH_DATA = 7, WEBP_MODE_RGB = 0, WEBP_MODE_RGBA = 1 };
typedef struct {
    int width, height, has_alpha, has_animation, format;
    uint32_t pad[5];
} webp_features;
static struct {
    int (*get_features)(const uint8_t *, size_t, webp_features *, int);
    uint8_t *(*decode_rgba_into)(const uint8_t *, size_t, uint8_t *, size_t, int);
    uint8_t *(*decode_rgb_into)(const uint8_t *, size_t, uint8_t *, size_t, int);
    void *(*inew_rgb)(int, uint8_t *, size_t, int);
    int (*iappend)(void *, const uint8_t *, size_t);
    void (*idelete)(void *);
} webp;
static int webp_loaded = 0;
static pthread_once_t webp_once = PTHREAD_ONCE_INIT;

static void load_webp(void) {
    static const char *names[] = {"libwebp.so.7", "libwebp.so", "libwebp.7.dylib", "libwebp.dylib",
                                  "/opt/homebrew/lib/libwebp.dylib", "/usr/local/lib/libwebp.dylib"};
    void *lib = NULL;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    *(void **)&webp.get_features = dlsym(lib, "WebPGetFeaturesInternal");
    *(void **)&webp.decode_rgba_into = dlsym(lib, "WebPDecodeRGBAInto");
    *(void **)&webp.decode_rgb_into = dlsym(lib, "WebPDecodeRGBInto");
    *(void **)&webp.inew_rgb = dlsym(lib, "WebPINewRGB");
    *(void **)&webp.iappend = dlsym(lib, "WebPIAppend");
    *(void **)&webp.idelete = dlsym(lib, "WebPIDelete");
    webp_loaded = webp.get_features && webp.decode_rgba_into && webp.decode_rgb_into && webp.inew_rgb &&
                  webp.iappend && webp.idelete;
}

int cis_webp_decode(const uint8_t *data, size_t len, int64_t max_pixels, cis_image *out) {
    memset(out, 0, sizeof(*out));
    pthread_once(&webp_once, load_webp);
    if (!webp_loaded) {
        set_msg(out, "WebP needs the libwebp library, which was not found (Debian/Ubuntu: apt-get install "
                     "libwebp7; macOS: brew install webp)");
        return CIS_UNSUPPORTED;
    }
    webp_features features;
    int st = webp.get_features(data, len, &features, WEBP_ABI);
    if (st == VP8_NOT_ENOUGH_DATA) {
        set_msg(out, "WebP data ends before the header is complete");
        return CIS_TRUNCATED;
    }
    if (st != VP8_OK) {
        set_msg(out, "WebP header is invalid");
        return CIS_CORRUPT;
    }
    if (features.has_animation) {
        /* Animated files: only the first frame would be wanted; keep it simple and refuse. */
        set_msg(out, "animated WebP is not supported");
        return CIS_UNSUPPORTED;
    }
    out->width = features.width;
    out->height = features.height;
    int rc = check_size(out, features.width, features.height, max_pixels);
    if (rc != CIS_OK) return rc;
    int channels = features.has_alpha ? 4 : 3;
    size_t stride = (size_t)features.width * (size_t)channels;
    size_t size = stride * (size_t)features.height;
    uint8_t *pixels = (uint8_t *)malloc(size);
    if (!pixels) return CIS_NO_MEMORY;
    uint8_t *ok = features.has_alpha
        ? webp.decode_rgba_into(data, len, pixels, size, (int)stride)
        : webp.decode_rgb_into(data, len, pixels, size, (int)stride);
    if (!ok) {
        free(pixels);
        /* Distinguish a cut-off file by asking the incremental decoder. */
        void *idec = webp.inew_rgb(features.has_alpha ? WEBP_MODE_RGBA : WEBP_MODE_RGB, NULL, 0, 0);
        int truncated = 0;
        if (idec) {
            truncated = webp.iappend(idec, data, len) == VP8_SUSPENDED;
            webp.idelete(idec);
        }
        set_msg(out, truncated ? "WebP data ends before the image is complete" : "WebP bitstream is invalid");
        return truncated ? CIS_TRUNCATED : CIS_CORRUPT;
    }
    out->channels = channels;
    out->bits = 8;
    out->pixels = pixels;
    return CIS_OK;
}

/* ---------------- PNG encoding ---------------- */

struct png_dst {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int failed;
};

static void png_write_mem(png_structp png, png_bytep src, png_size_t n) {
    struct png_dst *dst = (struct png_dst *)png_get_io_ptr(png);
    if (dst->len + n > dst->cap) {
        size_t cap = dst->cap ? dst->cap : 65536;
        while (cap < dst->len + n) cap *= 2;
        uint8_t *nb = (uint8_t *)realloc(dst->buf, cap);
        if (!nb) {
            dst->failed = 1;
            png_error(png, "out of memory while encoding PNG");
        }
        dst->buf = nb;
        dst->cap = cap;
    }
    memcpy(dst->buf + dst->len, src, n);
    dst->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static void png_fail_enc(png_structp png, png_const_charp msg) {
    char *m = (char *)png_get_error_ptr(png);
    if (m) snprintf(m, 256, "%s", msg);
    png_longjmp(png, 1);
}

int cis_png_encode(const uint8_t *pixels, int width, int height, int channels,
                   uint8_t **out, size_t *out_len, char *message, size_t message_len) {
    char msg[256] = {0};
    *out = NULL;
    *out_len = 0;
    if (width <= 0 || height <= 0) return CIS_ZERO_SIZE;
    if (channels != 3 && channels != 4) return CIS_UNSUPPORTED;
    struct png_dst dst = {NULL, 0, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, msg, png_fail_enc, png_warn);
    if (!png) return CIS_NO_MEMORY;
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return CIS_NO_MEMORY;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(dst.buf);
        if (message && message_len) snprintf(message, message_len, "%s", msg);
        return dst.failed ? CIS_NO_MEMORY : CIS_CORRUPT;
    }
    png_set_write_fn(png, &dst, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
                 channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)width * (size_t)channels;
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + stride * (size_t)y));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = dst.buf;
    *out_len = dst.len;
    return CIS_OK;
}

int cis_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len) {
    uLongf n = (uLongf)dst_len;
    int rc = uncompress(dst, &n, src, (uLong)src_len);
    return (rc == Z_OK && n == dst_len) ? CIS_OK : CIS_CORRUPT;
}

/* ---------------- JPEG encoding (benchmarks, tests) ---------------- */

int cis_jpeg_encode(const uint8_t *pixels, int width, int height, int quality, uint8_t **out, size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (width <= 0 || height <= 0) return CIS_ZERO_SIZE;
    struct jpeg_compress_struct cinfo;
    struct jerr_ctx jerr;
    memset(&jerr, 0, sizeof jerr);
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_fail;
    jerr.pub.output_message = jpeg_silent;
    unsigned char *buf = NULL;
    unsigned long len = 0;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buf);
        return CIS_CORRUPT;
    }
    jpeg_create_compress(&cinfo);
    jpeg_mem_dest(&cinfo, &buf, &len);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = 3;
    cinfo.in_color_space = JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t stride = (size_t)width * 3;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + stride * cinfo.next_scanline);
        jpeg_write_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_compress(&cinfo);
    jpeg_destroy_compress(&cinfo);
    *out = buf;
    *out_len = (size_t)len;
    return CIS_OK;
}
