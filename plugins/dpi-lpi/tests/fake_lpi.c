/*
 * A test double of libprotoident's C API, built by the tests with gcc.
 *
 * It is NOT libprotoident and classifies nothing: lpi_guess_protocol reports
 * back, as the module name, every field of the lpi_data_t it received, so
 * the tests check dpi-lpi's own marshalling (field order, sizes, byte order)
 * through the real ctypes binding.  The struct is declared here in C, the
 * way libprotoident 2.0.15 declares it, so the C compiler - not our Python
 * declaration - decides the offsets the double reads.
 *
 * Build variants (-D):
 *   FAKE_EXTENDED     append 12 bytes to lpi_data_t, as an unreleased branch does
 *   FAKE_NAME="..."   return this fixed module name instead of the field dump
 *   FAKE_PRIORITY=n   module priority (default 3)
 *   FAKE_INIT_FAIL    lpi_init_library returns -1
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct lpi {
    uint32_t payload[2];
    bool seen_syn[2];
    uint32_t seqno[2];
    uint32_t observed[2];
    uint16_t server_port;
    uint16_t client_port;
    uint8_t trans_proto;
    uint32_t payload_len[2];
    uint32_t ips[2];
#ifdef FAKE_EXTENDED
    uint32_t extra[3];
#endif
} lpi_data_t;

typedef struct lpi_module {
    int protocol;
    int category;
    const char *name;
    uint8_t priority;
    void *callback;
} lpi_module_t;

#ifdef FAKE_EXTENDED
_Static_assert(sizeof(lpi_data_t) == 64, "extended lpi_data_t is 64 bytes");
#else
_Static_assert(sizeof(lpi_data_t) == 52, "lpi_data_t of 2.0.15 is 52 bytes on x86-64");
_Static_assert(offsetof(lpi_data_t, payload_len) == 36, "payload_len at 36");
_Static_assert(offsetof(lpi_data_t, ips) == 44, "ips at 44");
#endif

#ifndef FAKE_PRIORITY
#define FAKE_PRIORITY 3
#endif
#define FAKE_CATEGORY 7

static bool initialised = false;
/* Reused by every guess and scribbled over on free: a caller that kept the
 * pointer instead of copying the name at once would read the wrong text. */
static char name_buf[512];
static char category_buf[64];
static lpi_module_t module = {42, FAKE_CATEGORY, name_buf, FAKE_PRIORITY, NULL};

/* Present so that lazy binding is exercised: like the real library's
 * lpi_update_data it calls into libtrace, which is not linked here. */
extern size_t trace_get_payload_length(const void *packet);

int lpi_update_data(void *packet, lpi_data_t *data, uint8_t dir) {
    (void)data;
    (void)dir;
    return (int)trace_get_payload_length(packet);
}

int lpi_init_library(void) {
#ifdef FAKE_INIT_FAIL
    return -1;
#else
    initialised = true;
    return 0;
#endif
}

void lpi_free_library(void) {
    initialised = false;
    memset(name_buf, 'X', sizeof(name_buf) - 1);
    name_buf[sizeof(name_buf) - 1] = '\0';
}

void lpi_init_data(lpi_data_t *data) {
    data->payload[0] = 0;
    data->payload[1] = 0;
    data->seen_syn[0] = false;
    data->seen_syn[1] = false;
    data->seqno[0] = 0;
    data->seqno[1] = 0;
    data->observed[0] = 0;
    data->observed[1] = 0;
    data->server_port = 0;
    data->client_port = 0;
    data->trans_proto = 0;
    data->payload_len[0] = 0;
    data->payload_len[1] = 0;
    data->ips[0] = 0;
    data->ips[1] = 0;
#ifdef FAKE_EXTENDED
    data->extra[0] = data->extra[1] = data->extra[2] = 0;
#endif
}

/* Memory bytes of a uint32 field, in memory order, as hex. */
__attribute__((unused)) static void hex4(char *out, const uint32_t *field) {
    const unsigned char *b = (const unsigned char *)field;
    sprintf(out, "%02x%02x%02x%02x", b[0], b[1], b[2], b[3]);
}

lpi_module_t *lpi_guess_protocol(lpi_data_t *data) {
    char p0[9], p1[9], i0[9], i1[9];
    if (!initialised)
        return NULL;
#ifdef FAKE_NAME
    (void)p0; (void)p1; (void)i0; (void)i1;
    snprintf(name_buf, sizeof(name_buf), "%s", FAKE_NAME);
#else
    hex4(p0, &data->payload[0]);
    hex4(p1, &data->payload[1]);
    hex4(i0, &data->ips[0]);
    hex4(i1, &data->ips[1]);
    snprintf(name_buf, sizeof(name_buf),
             "p0=%s p1=%s syn=%d,%d seq=%u,%u obs=%u,%u sp=%u cp=%u tp=%u len=%u,%u ip0=%s ip1=%s",
             p0, p1, (int)data->seen_syn[0], (int)data->seen_syn[1], data->seqno[0], data->seqno[1],
             data->observed[0], data->observed[1], (unsigned)data->server_port, (unsigned)data->client_port,
             (unsigned)data->trans_proto, data->payload_len[0], data->payload_len[1], i0, i1);
#endif
    return &module;
}

const char *lpi_print_category(int category) {
    snprintf(category_buf, sizeof(category_buf), "category-%d", category);
    return category_buf;
}
