/*
 * tidegate-decode: what the gateway makes of one payload.
 *
 * Reads one device payload (a file or stdin), decodes it with the gateway's decoder and
 * prints each reading as one line of canonical JSON, or the rejection the gateway would
 * dead-letter it with. See usage() for the contract; tests/unit/test_codec_decode_tool.sh
 * checks it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <mbedtls/md.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec.h"
#include "codec_canonical.h"
#include "util.h"

#define EXIT_INVALID 1 /* the payload was rejected */
#define EXIT_USAGE 2   /* bad command line or unreadable input */

#define MAX_KEY_BYTES 128
#define MAX_INPUT_BYTES (16u << 20)

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate-decode [options] [FILE|-]\n"
            "\n"
            "Decodes one device payload (FILE, or stdin when FILE is absent or '-') the way the\n"
            "gateway does and prints each reading as one line of canonical JSON on stdout:\n"
            "  {\"device\",\"boot\",\"seq\",\"ts\",\"m\":{...},\"u\":{...}}\n"
            "boot/seq appear for native payloads only, \"u\" only when metrics have units.\n"
            "gw_ts and gateway appear only with --gateway (gw_ts is then the current time).\n"
            "Formats: native CBOR/JSON and SenML CBOR/JSON (RFC 8428), told apart by the first\n"
            "byte. A signed payload gets a note on stderr: 'note: signed: sig=<hex>, N signed\n"
            "bytes', and with --key the HMAC-SHA256 is checked as the gateway would.\n"
            "\n"
            "options:\n"
            "  --format auto|native|senml   payload family (default auto)\n"
            "  --device ID                  device id, as from the MQTT topic (default cli)\n"
            "  --now MS                     current time in ms since the epoch: resolves SenML\n"
            "                               relative times (default the system clock)\n"
            "  --gateway ID                 include gw_ts and gateway in each record\n"
            "  --key HEX                    device key: verify the payload's signature\n"
            "  --max-bytes N                payload size limit (default %d)\n"
            "  -h, --help                   this text\n"
            "\n"
            "exit status: 0 decoded; 1 payload rejected, with 'error: <reason>: <detail>' on\n"
            "stderr (<reason> is the DLQ reason code); 2 usage error or unreadable input.\n",
            TG_CODEC_DEFAULT_MAX_PAYLOAD_BYTES);
}

static int64_t wall_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool parse_i64(const char *text, int64_t *value)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end)
        return false;
    *value = v;
    return true;
}

static bool parse_hex(const char *text, uint8_t *out, size_t cap, size_t *len)
{
    size_t n = strlen(text);
    if (n == 0 || n % 2 || n / 2 > cap)
        return false;
    for (size_t i = 0; i < n / 2; i++) {
        int hi = tg_hex_digit(text[2 * i]), lo = tg_hex_digit(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    *len = n / 2;
    return true;
}

/* Reads all of f, up to MAX_INPUT_BYTES (the decoder applies the real limit). */
static uint8_t *read_all(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap || cap >= MAX_INPUT_BYTES)
            break;
        uint8_t *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            return NULL;
        }
        buf = bigger;
        cap *= 2;
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

static void print_hex(FILE *out, const uint8_t *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++)
        fprintf(out, "%02x", bytes[i]);
}

/* Same verdict as the gateway: HMAC-SHA256(key, signed bytes) must equal sig. */
static bool signature_matches(const struct tg_decoded *decoded, const uint8_t *key, size_t key_len)
{
    uint8_t mac[TG_SIG_LEN];
    const mbedtls_md_info_t *sha256 = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    if (!sha256 || mbedtls_md_hmac(sha256, key, key_len, decoded->signed_bytes,
                                   decoded->signed_len, mac) != 0)
        return false;
    uint8_t diff = 0;
    for (size_t i = 0; i < TG_SIG_LEN; i++)
        diff |= mac[i] ^ decoded->sig[i];
    return diff == 0;
}

static int print_readings(const struct tg_decoded *decoded, const char *gateway, int64_t now_ms)
{
    size_t cap = 1024;
    char *line = malloc(cap);
    for (size_t i = 0; line && i < decoded->n_readings; i++) {
        size_t len;
        tg_err err =
            tg_codec_canonical_json(&decoded->readings[i], gateway, now_ms, line, cap, &len);
        if (err == TG_ERR_FULL) {
            char *bigger = realloc(line, len);
            if (!bigger)
                break;
            line = bigger;
            cap = len;
            err = tg_codec_canonical_json(&decoded->readings[i], gateway, now_ms, line, cap, &len);
        }
        if (err != TG_OK) {
            fprintf(stderr, "error: %s: cannot encode the canonical record\n", tg_err_reason(err));
            free(line);
            return EXIT_INVALID;
        }
        fwrite(line, 1, len, stdout);
        fputc('\n', stdout);
    }
    if (!line) {
        fprintf(stderr, "error: nomem: out of memory\n");
        return EXIT_USAGE;
    }
    free(line);
    return fflush(stdout) == 0 ? 0 : EXIT_USAGE;
}

int main(int argc, char **argv)
{
    enum { OPT_FORMAT = 256, OPT_DEVICE, OPT_NOW, OPT_GATEWAY, OPT_KEY, OPT_MAX_BYTES };
    static const struct option options[] = {
        {"format", required_argument, NULL, OPT_FORMAT},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"now", required_argument, NULL, OPT_NOW},
        {"gateway", required_argument, NULL, OPT_GATEWAY},
        {"key", required_argument, NULL, OPT_KEY},
        {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum tg_format format = TG_FORMAT_AUTO;
    const char *device = "cli", *gateway = NULL;
    int64_t now_ms = wall_clock_ms(), max_bytes = 0;
    uint8_t key[MAX_KEY_BYTES];
    size_t key_len = 0;
    bool have_key = false;

    int opt;
    while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (opt) {
        case OPT_FORMAT:
            if (strcmp(optarg, "auto") == 0)
                format = TG_FORMAT_AUTO;
            else if (strcmp(optarg, "native") == 0)
                format = TG_FORMAT_NATIVE;
            else if (strcmp(optarg, "senml") == 0)
                format = TG_FORMAT_SENML;
            else {
                fprintf(stderr, "tidegate-decode: --format must be auto, native or senml\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_DEVICE:
            device = optarg;
            break;
        case OPT_NOW:
            if (!parse_i64(optarg, &now_ms) || now_ms < 0) {
                fprintf(stderr, "tidegate-decode: --now takes ms since the epoch\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_GATEWAY:
            gateway = optarg;
            break;
        case OPT_KEY:
            if (!parse_hex(optarg, key, sizeof key, &key_len)) {
                fprintf(stderr, "tidegate-decode: --key takes 1 to %d bytes in hex\n",
                        MAX_KEY_BYTES);
                return EXIT_USAGE;
            }
            have_key = true;
            break;
        case OPT_MAX_BYTES:
            if (!parse_i64(optarg, &max_bytes) || max_bytes <= 0 || max_bytes > MAX_INPUT_BYTES) {
                fprintf(stderr, "tidegate-decode: --max-bytes takes 1 to %u\n", MAX_INPUT_BYTES);
                return EXIT_USAGE;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (argc - optind > 1) {
        fprintf(stderr, "tidegate-decode: at most one input file\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *path = optind < argc ? argv[optind] : "-";
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!in) {
        fprintf(stderr, "tidegate-decode: %s: %s\n", path, strerror(errno));
        return EXIT_USAGE;
    }
    size_t len = 0;
    uint8_t *payload = read_all(in, &len);
    if (in != stdin)
        fclose(in);
    if (!payload) {
        fprintf(stderr, "tidegate-decode: %s: cannot read\n", path);
        return EXIT_USAGE;
    }

    struct tg_codec_limits limits = tg_codec_limits_default();
    if (max_bytes)
        limits.max_payload_bytes = (size_t)max_bytes;
    struct tg_decoder *dec = tg_decoder_new(&limits);
    if (!dec) {
        fprintf(stderr, "error: nomem: out of memory\n");
        free(payload);
        return EXIT_USAGE;
    }
    int status;
    struct tg_decoded decoded;
    tg_err err = tg_decoder_decode(dec, format, device, payload, len, now_ms, &decoded);
    if (err != TG_OK) {
        fprintf(stderr, "error: %s: %s\n", tg_err_reason(err), tg_decoder_error(dec));
        status = EXIT_INVALID;
    } else if (decoded.sig && have_key && !signature_matches(&decoded, key, key_len)) {
        fprintf(stderr, "error: %s: HMAC-SHA256 of the %zu signed bytes with the given key "
                        "does not match \"sig\"\n",
                tg_err_reason(TG_ERR_BAD_SIGNATURE), decoded.signed_len);
        status = EXIT_INVALID;
    } else if (!decoded.sig && have_key) {
        fprintf(stderr, "error: %s: --key given but the payload carries no signature\n",
                tg_err_reason(TG_ERR_UNSIGNED));
        status = EXIT_INVALID;
    } else {
        if (decoded.sig) {
            fprintf(stderr, "note: signed: sig=");
            print_hex(stderr, decoded.sig, TG_SIG_LEN);
            fprintf(stderr, ", %zu signed bytes%s\n", decoded.signed_len,
                    have_key ? ", signature verified" : " (not verified: no --key)");
        }
        status = print_readings(&decoded, gateway, now_ms);
    }
    tg_decoder_destroy(dec);
    free(payload);
    return status;
}
