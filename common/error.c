#include "error.h"

struct err_info {
    const char *reason;
    const char *text;
    bool retriable;
};

static const struct err_info infos[TG_ERR__COUNT] = {
    [TG_OK] = {"ok", "success", false},
    [TG_ERR_NOMEM] = {"nomem", "out of memory", true},
    [TG_ERR_IO] = {"io", "input/output error", true},
    [TG_ERR_FULL] = {"full", "queue or store is full", true},
    [TG_ERR_UNAVAILABLE] = {"unavailable", "peer is unreachable", true},
    [TG_ERR_TIMEOUT] = {"timeout", "operation timed out", true},
    [TG_ERR_CONFIG] = {"config", "invalid configuration", false},
    [TG_ERR_USAGE] = {"usage", "invalid argument", false},
    [TG_ERR_INTERNAL] = {"internal", "internal error", false},
    [TG_ERR_TOO_LARGE] = {"too_large", "payload exceeds the size limit", false},
    [TG_ERR_MALFORMED] = {"malformed", "payload is not well-formed", false},
    [TG_ERR_TRAILING_BYTES] = {"trailing_bytes", "bytes follow the payload's top-level item", false},
    [TG_ERR_UNKNOWN_FORMAT] = {"unknown_format", "payload is neither a native reading nor SenML",
                               false},
    [TG_ERR_TOO_DEEP] = {"too_deep", "payload nests deeper than its format allows", false},
    [TG_ERR_MISSING_FIELD] = {"missing_field", "a required field is missing", false},
    [TG_ERR_WRONG_TYPE] = {"wrong_type", "a field has the wrong type", false},
    [TG_ERR_UNKNOWN_FIELD] = {"unknown_field", "a field is not defined by the format", false},
    [TG_ERR_DUPLICATE_FIELD] = {"duplicate_field", "a key appears twice in one map", false},
    [TG_ERR_NON_FINITE] = {"non_finite", "a number is NaN or infinite", false},
    [TG_ERR_OUT_OF_RANGE] = {"out_of_range", "a value is outside its allowed range", false},
    [TG_ERR_TOO_MANY] = {"too_many", "too many metrics or readings in one payload", false},
    [TG_ERR_BAD_NAME] = {"bad_name", "a name or device id is empty, too long or invalid",
                         false},
    [TG_ERR_UNSUPPORTED] = {"unsupported", "a construct of the format is not supported", false},
    [TG_ERR_BAD_SIGNATURE] = {"bad_signature", "the payload signature does not verify", false},
    [TG_ERR_UNSIGNED] = {"unsigned", "the device requires a signature and none was sent", false},
    [TG_ERR_CLOCK_SKEW] = {"clock_skew", "the timestamp is too far from the gateway's clock",
                           false},
};

static const struct err_info *info(tg_err err)
{
    if ((unsigned)err >= TG_ERR__COUNT)
        return &infos[TG_ERR_INTERNAL];
    return &infos[err];
}

bool tg_err_retriable(tg_err err) { return info(err)->retriable; }

const char *tg_err_reason(tg_err err) { return info(err)->reason; }

const char *tg_strerror(tg_err err) { return info(err)->text; }
