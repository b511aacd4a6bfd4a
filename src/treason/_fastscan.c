/*
 * The fast scanner: capture framing (pcap, pcapng), packet decoding and the endpoint model of
 * treason.model, in one pass over byte chunks, with no per-packet Python objects.
 *
 * Every rule here is a transcription of the readable reference (treason.readers, treason.decode,
 * treason.model); the differential tests hold the two to the same events and counters. When the
 * reference changes, this file changes with it.
 *
 * The Python side (treason.engine.compiled) owns the byte source (files, stdin, gzip) and feeds
 * contiguous buffers; feed() consumes every complete record and reports how many bytes the next
 * record needs, so records may be split across reads anywhere.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

typedef __int128 i128;
typedef unsigned __int128 u128;

#define MAX_SHIFT 14
#define ALL_SHIFTS ((uint16_t)((1u << (MAX_SHIFT + 1)) - 1))
#define MAX_RECORD (256 * 1024)
#define MAX_BLOCK (16 * 1024 * 1024)
#define NIL UINT32_MAX
/* treason.model.HOLD_NS: how long (capture time) a zero-window event stays open */
#define HOLD_NS 200000000

#define F_FIN 0x01
#define F_SYN 0x02
#define F_RST 0x04
#define F_ACK 0x10

/* Skip reasons, in the order of treason.decode.SKIP_REASONS (exported as SKIP_REASONS). */
enum {
    SK_NOT_IP,
    SK_NOT_TCP,
    SK_FRAGMENT,
    SK_UNKNOWN_LT,
    SK_MALFORMED,
    SK_TRUNC,
    SK_TUNNEL_OTHER,
    SK_MANY_TAGS,
    SK_MANY_TUNNELS,
    SK_N
};

/* treason.decode: nesting caps, and the tunnel kinds of a flow key's tag path. */
#define MAX_TAGS 16
#define MAX_TUNNELS 8
#define PATH_WORDS (3 * (MAX_TAGS + MAX_TUNNELS))
enum {
    TUNNEL_VXLAN = 1,
    TUNNEL_GENEVE,
    TUNNEL_GRE,
    TUNNEL_GRE_KEY,
    TUNNEL_ERSPAN,
    TUNNEL_GTP,
    TUNNEL_IP,
    TUNNEL_PPPOE,
    TUNNEL_MPLS
};

/* Model anomaly counters, in the order of treason.engine.stats.ModelStats (MODEL_COUNTERS). */
enum {
    M_DUPLICATES,
    M_OLD_ACKS,
    M_STALE,
    M_PAWS,
    M_UNSEEN,
    M_STRAY,
    M_IGNORED_SYNS,
    M_RESETS,
    M_OVERRUNS,
    M_IMPOSSIBLE,
    M_N
};

/* The names of what crosses into Python, in order: treason.engine.compiled checks them at import,
   so a field added or moved on one side only cannot be read under another field's name. */
static const char *const SKIP_NAMES[SK_N] = {
    "not-ip",           "not-tcp",      "fragment",      "unknown-linktype", "malformed",
    "truncated-header", "tunnel-other", "over-16-tags",  "over-8-tunnels"};
static const char *const MODEL_NAMES[M_N] = {
    "duplicates", "old_acks", "stale_updates", "paws_rejects",   "unseen_acks",
    "stray_acks", "ignored_syns", "resets",     "window_overruns", "impossible_acks"};
/* ev_tuple's fields. */
static const char *const EVENT_NAMES[] = {
    "frame",  "ts_ns",    "v6",        "src",          "sport",        "dst",     "dport",
    "path",   "cls",      "closing",   "definite",     "old_edge",     "new_edge", "shrink_bytes",
    "beyond_bytes", "snd_una", "snd_nxt", "ack",       "win",          "shift",   "scale_known",
    "outer"};

/* Severity values of treason.events.Severity. */
enum { CLS_NONE = 0, CLS_RETRACTION = 1, CLS_SHRINK = 2, CLS_BEYOND = 3, CLS_KERNEL = 4 };

/* -- serial arithmetic (treason.seq) -------------------------------------------------------- */

static inline int32_t sdiff(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline int before(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static inline int after(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

/* -- byte access ---------------------------------------------------------------------------- */

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t le32(const uint8_t *p)
{
    return ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}
static inline uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline int addr_eq(const uint8_t *a, const uint8_t *b)
{
    return ld64(a) == ld64(b) && ld64(a + 8) == ld64(b + 8);
}

/* A total order on addresses (any order will do: it only makes the flow key canonical). */
static inline int addr_cmp(const uint8_t *a, const uint8_t *b)
{
    uint64_t x = ld64(a), y = ld64(b);
    if (x == y) {
        x = ld64(a + 8);
        y = ld64(b + 8);
    }
    return x < y ? -1 : x > y;
}

static inline uint16_t rd16(const uint8_t *p, int big) { return big ? be16(p) : le16(p); }
static inline uint32_t rd32(const uint8_t *p, int big) { return big ? be32(p) : le32(p); }

/* -- records -------------------------------------------------------------------------------- */

typedef struct {
    uint64_t frame;
    i128 ts;
    i128 clock; /* the flow table's clock at this segment: the latest segment time so far */
    int v6;
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    uint32_t seq, ack;
    uint8_t flags;
    uint16_t win;
    int64_t payload_len;
    int ws; /* -1: option absent */
    uint32_t nvlan; /* words of the tag path (VLAN ids, tunnel entries): the flow key's */
    const uint16_t *vlan;
    uint16_t ip_id, checksum;
    int has_tsval;
    uint32_t tsval;
    /* decoder state (treason.decode._Stack) */
    uint32_t tags, tunnels, nouter;
    uint16_t path[PATH_WORDS];
    uint8_t outer_v6[MAX_TUNNELS + 1];
    uint8_t outer[MAX_TUNNELS + 1][2][16]; /* enclosing IP headers' source, destination */
} Seg;

/* What a side needs only while its peer's window scale is unknown. */
typedef struct {
    uint32_t max_edge[MAX_SHIFT + 1]; /* per shift, furthest edge offered */
    uint32_t shrink_counts[MAX_SHIFT + 1]; /* per shift, full shrinks it would imply */
} Unknown;

typedef struct {
    uint32_t isn, snd_una, snd_nxt, snd_wl1, snd_wl2, ts_recent;
    uint32_t furthest; /* H_FAR: furthest edge ever offered (shift 14 while unknown) */
    Unknown *unk; /* NULL until the first accepted update while the scale is unknown */
    uint16_t snd_wnd, feasible;
    uint8_t has; /* H_* bits: which optional fields are set */
    int8_t ws_option; /* -1: none */
    int8_t snd_wscale; /* -1: unknown */
    uint8_t fin;
    /* the last segment this side sent, for exact-duplicate detection */
    uint8_t c_flags;
    uint16_t c_ip_id, c_checksum, c_win;
    uint32_t c_seq, c_ack;
    int64_t c_plen;
    uint64_t held; /* 1 + id of the open zero-window event this side holds; 0: none */
} Side;

#define H_ISN 1
#define H_UNA 2
#define H_NXT 4
#define H_WL 8
#define H_WND 16
#define H_COPY 32
#define H_TS 64
#define H_FAR 128

#define VLAN_INLINE 4

/* The second path of a connection whose directions carry different tags (rare: allocated). */
typedef struct AltKey {
    uint32_t hash, n;
    uint16_t path[];
} AltKey;

typedef struct {
    /* flow key: VLAN stack and both endpoints, lower (address, port) first */
    uint8_t lo_addr[16], hi_addr[16];
    uint16_t lo_port, hi_port;
    uint8_t v6;
    uint8_t a_is_lo; /* side a (sender of the first segment) is the lower endpoint */
    uint8_t client; /* 0 none, 1 a, 2 b */
    uint8_t syn_seen, synack_seen, established, reset;
    uint8_t pending; /* has a SYN-SENT entry (FlowTable._pending) under pend_hash */
    uint32_t nvlan;
    uint16_t vlan_in[VLAN_INLINE];
    uint16_t *vlan_ext;
    uint32_t hash, pend_hash;
    uint64_t syn_frame; /* Connection.syn_frame */
    struct AltKey *alt; /* FlowTable._alias: the key of the other direction's path, if paired */
    uint32_t prev, next; /* recency list, least recent first */
    i128 last_active;
    Side a, b;
} Conn;

/*
 * An event not yet handed to Python. Events leave in frame order once final; an open one (a
 * zero window, treason.model.FlowTable) still takes data the sender had in flight, and every
 * event after it waits in the queue behind it.
 */
typedef struct {
    uint64_t frame;
    i128 ts;
    i128 deadline; /* capture clock at which an open event becomes final */
    uint8_t src[16], dst[16];
    uint16_t sport, dport, win;
    uint8_t v6, cls, closing, definite, shift, scale_known;
    uint8_t open; /* still held by side `side` of connection `conn` */
    uint8_t side; /* 1 a, 2 b */
    uint32_t conn;
    uint32_t old_edge, new_edge, snd_una, snd_nxt, ack;
    int32_t shrink_bytes, beyond_bytes;
    uint32_t nvlan;
    uint16_t vlan_in[VLAN_INLINE];
    uint16_t *vlan_ext;
    PyObject *outer; /* bytes: per enclosing IP header, v6 flag, source, destination; or NULL */
} EvRec;

typedef struct {
    uint16_t linktype;
    uint32_t snaplen;
    uint64_t ns_mul;
    int div_kind; /* 0: divide by div10, 1: shift right by div_shift, 2: quotient is 0 */
    uint64_t div10;
    int div_shift;
    i128 offset_ns;
} Iface;

typedef struct {
    PyObject_HEAD
    /* framing, per capture (begin) */
    int fmt; /* 1 pcap, 2 pcapng, 0 before begin() */
    uint64_t number; /* frames of this capture so far: the next frame's number - 1 */
    uint64_t base; /* added to every frame number of this capture (begin) */
    int started;
    int big;
    uint64_t ns_per_unit;
    uint32_t rec_len, linktype, snaplen;
    /* records longer than their snap length, read whole: the first of this capture */
    uint64_t long_frame; /* its frame number; 0 none yet */
    uint32_t long_len, long_snap;
    Iface *ifaces;
    uint32_t n_ifaces, cap_ifaces;
    uint64_t sections;
    uint64_t offset; /* absolute stream offset of the next unconsumed byte */
    /* error: 0 none, 1 CaptureError, 2 TruncatedCapture */
    int err_kind;
    char err_msg[256];
    int64_t err_offset; /* -1: none */
    /* counters */
    uint64_t frames, segments, over_snaplen, skipped[SK_N], model[M_N];
    uint64_t flows, handshakes, evicted_idle, evicted_cap;
    /* flow table */
    uint32_t max_flows;
    i128 idle, now;
    Conn *conns;
    uint32_t n_conns, cap_conns, free_head, live;
    uint32_t *slots; /* open addressing: conn index + 1 (| SLOT_ALT, SLOT_PEND), 0 empty */
    uint32_t n_entries; /* slots in use */
    uint64_t hash_seed; /* random per scanner: crafted flow keys cannot pile onto one slot */
    uint32_t n_slots; /* power of two */
    uint32_t lru_head, lru_tail;
    /* events not yet final or not yet behind every open one: ids q_head..q_tail-1, a ring */
    EvRec *queue;
    uint64_t q_head, q_tail, q_cap; /* q_cap: a power of two (or 0) */
    /* final events, as tuples, not yet taken by Python */
    PyObject *events;
    /* with mark_flows(True): per frame, None (skipped) or (flow key, event bits), not yet taken */
    PyObject *marks;
    /* with series(cap, before, after): plot series per connection (see "plot series") */
    int series_on;
    uint64_t s_cap;
    uint32_t s_before, s_after;
    PyObject *series_done; /* (key bytes, points bytes) of ended connections with events */
    struct Series **sers; /* per connection index: its series, or NULL (cap_sers entries) */
    uint32_t cap_sers;
    /* with filter({linktype: program}): frames the capture filter rejects are not analysed */
    struct BpfProg *filters;
    uint32_t n_filters;
    uint64_t filtered;
    int py_error;
    /* split mode (split()): frames are decoded into segment records per bucket, not analysed */
    int split; /* 0 off; else 1 + number of buckets (1: only the capture's time span) */
    uint8_t **bk; /* per bucket: segment records (SegRec), back to back */
    size_t *bk_len, *bk_cap;
    int have_first;
    uint32_t first_lt;
    i128 first_ts, max_ts; /* of the frames split so far */
} Scanner;

static void set_error(Scanner *S, int kind, int64_t offset, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void set_error(Scanner *S, int kind, int64_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(S->err_msg, sizeof S->err_msg, fmt, ap);
    va_end(ap);
    S->err_kind = kind;
    S->err_offset = offset;
}

/* -- decoder (treason.decode) --------------------------------------------------------------- */

/*
 * The flow key's tag path (treason.decode._Stack.path) as 16-bit words: a VLAN id is one word
 * (< 0x1000); a tunnel entry (kind << 32 | id) is the word 0x8000 | kind and the id's two
 * halves. Equal word strings are equal Python tuples; ev_tuple turns them back.
 */
#define PATH_TUNNEL 0x8000

static int path_tag(Seg *g, uint16_t vlan)
{
    if (++g->tags > MAX_TAGS)
        return SK_MANY_TAGS;
    g->path[g->nvlan++] = vlan;
    return -1;
}

static int path_entry(Seg *g, uint32_t kind, uint32_t id)
{
    g->path[g->nvlan++] = (uint16_t)(PATH_TUNNEL | kind);
    g->path[g->nvlan++] = (uint16_t)(id >> 16);
    g->path[g->nvlan++] = (uint16_t)id;
    return -1;
}

static int path_label(Seg *g, uint32_t label)
{
    if (++g->tags > MAX_TAGS)
        return SK_MANY_TAGS;
    return path_entry(g, TUNNEL_MPLS, label);
}

static int path_tunnel(Seg *g, uint32_t kind, uint32_t id)
{
    if (++g->tunnels > MAX_TUNNELS)
        return SK_MANY_TUNNELS;
    return path_entry(g, kind, id);
}

static void push_outer(Seg *g, int v6, const uint8_t *src, const uint8_t *dst)
{
    int alen = v6 ? 16 : 4;
    g->outer_v6[g->nouter] = (uint8_t)v6;
    memcpy(g->outer[g->nouter][0], src, alen);
    memcpy(g->outer[g->nouter][1], dst, alen);
    g->nouter++;
}

static int dec_ipv4(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g);
static int dec_ipv6(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g);
static int dec_ethertype(const uint8_t *d, int64_t len, int64_t off, uint16_t etype,
                         uint32_t orig_len, Seg *g);

/* Returns a skip reason, or -1 when g holds a segment. */
static int dec_tcp(const uint8_t *d, int64_t len, int64_t off, int64_t ip_payload, int more_frag,
                   Seg *g)
{
    if (ip_payload < 20)
        return more_frag ? SK_FRAGMENT : SK_MALFORMED;
    if (len < off + 20)
        return SK_TRUNC;
    const uint8_t *t = d + off;
    int64_t doff = (t[12] >> 4) * 4;
    uint8_t flags = t[13];
    if (doff < 20)
        return SK_MALFORMED;
    if (doff > ip_payload)
        return more_frag ? SK_FRAGMENT : SK_MALFORMED;
    if ((flags & F_SYN) && (flags & (F_RST | F_FIN)))
        return SK_MALFORMED;
    int ws = -1, has_tsval = 0;
    uint32_t tsval = 0;
    if (doff > 20) {
        int64_t end = off + doff;
        int cut = 0;
        if (len < end) {
            if (flags & F_SYN)
                return SK_TRUNC;
            end = len;
            cut = 1;
        }
        int64_t i = off + 20;
        while (i < end) {
            uint8_t kind = d[i];
            if (kind == 0)
                break;
            if (kind == 1) {
                i += 1;
                continue;
            }
            if (i + 1 >= end) {
                if (cut)
                    break;
                return SK_MALFORMED;
            }
            uint8_t olen = d[i + 1];
            if (olen < 2)
                return SK_MALFORMED;
            if (i + olen > end) {
                if (cut)
                    break;
                return SK_MALFORMED;
            }
            if (kind == 3 && olen == 3)
                ws = d[i + 2];
            else if (kind == 8 && olen == 10) {
                tsval = be32(d + i + 2);
                has_tsval = 1;
            }
            i += olen;
        }
    }
    g->sport = be16(t);
    g->dport = be16(t + 2);
    g->seq = be32(t + 4);
    g->ack = be32(t + 8);
    g->flags = flags;
    g->win = be16(t + 14);
    g->checksum = be16(t + 16);
    g->payload_len = ip_payload - doff;
    g->ws = ws;
    g->has_tsval = has_tsval;
    g->tsval = tsval;
    return -1;
}

static int dec_ether(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    if (len < off + 14)
        return SK_TRUNC;
    return dec_ethertype(d, len, off + 14, be16(d + off + 12), orig_len, g);
}

static int dec_ip_by_version(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len,
                             Seg *g)
{
    if (len < off + 1)
        return SK_TRUNC;
    if (d[off] >> 4 == 4)
        return dec_ipv4(d, len, off, orig_len, g);
    if (d[off] >> 4 == 6)
        return dec_ipv6(d, len, off, orig_len, g);
    return SK_TUNNEL_OTHER;
}

static int dec_mpls(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    for (;;) {
        if (len < off + 4)
            return SK_TRUNC;
        uint32_t entry = be32(d + off);
        int why = path_label(g, entry >> 12);
        if (why >= 0)
            return why;
        off += 4;
        if (entry & 0x100)
            return dec_ip_by_version(d, len, off, orig_len, g);
    }
}

static int dec_pppoe(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    if (len < off + 8)
        return SK_TRUNC;
    if (d[off] != 0x11 || d[off + 1] != 0)
        return SK_MALFORMED;
    int why = path_tunnel(g, TUNNEL_PPPOE, be16(d + off + 2));
    if (why >= 0)
        return why;
    uint16_t proto = be16(d + off + 6);
    if (proto == 0x0021)
        return dec_ipv4(d, len, off + 8, orig_len, g);
    if (proto == 0x0057)
        return dec_ipv6(d, len, off + 8, orig_len, g);
    return SK_NOT_IP;
}

static int dec_ethertype(const uint8_t *d, int64_t len, int64_t off, uint16_t etype,
                         uint32_t orig_len, Seg *g)
{
    while (etype == 0x8100 || etype == 0x88A8 || etype == 0x9100) {
        if (len < off + 4)
            return SK_TRUNC;
        int why = path_tag(g, be16(d + off) & 0x0FFF);
        if (why >= 0)
            return why;
        etype = be16(d + off + 2);
        off += 4;
    }
    if (etype == 0x0800)
        return dec_ipv4(d, len, off, orig_len, g);
    if (etype == 0x86DD)
        return dec_ipv6(d, len, off, orig_len, g);
    if (etype == 0x8847 || etype == 0x8848)
        return dec_mpls(d, len, off, orig_len, g);
    if (etype == 0x8864)
        return dec_pppoe(d, len, off, orig_len, g);
    return SK_NOT_IP;
}

static int dec_gtpu(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    if (len < off + 8)
        return SK_TRUNC;
    uint8_t flags = d[off];
    if (flags >> 5 != 1 || !(flags & 0x10) || d[off + 1] != 255)
        return SK_TUNNEL_OTHER;
    uint32_t teid = be32(d + off + 4);
    int64_t pos = off + 8;
    if (flags & 0x07) {
        if (len < pos + 4)
            return SK_TRUNC;
        uint8_t next_ext = d[pos + 3];
        pos += 4;
        while (next_ext) {
            if (len < pos + 1)
                return SK_TRUNC;
            int64_t size = (int64_t)d[pos] * 4;
            if (size == 0)
                return SK_MALFORMED;
            if (len < pos + size)
                return SK_TRUNC;
            next_ext = d[pos + size - 1];
            pos += size;
        }
    }
    int why = path_tunnel(g, TUNNEL_GTP, teid);
    if (why >= 0)
        return why;
    return dec_ip_by_version(d, len, pos, orig_len, g);
}

static int dec_udp(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g,
                   int v6, const uint8_t *src, const uint8_t *dst)
{
    if (len < off + 8)
        return SK_TRUNC;
    uint16_t dport = be16(d + off + 2);
    if (dport != 4789 && dport != 8472 && dport != 6081 && dport != 2152)
        return SK_NOT_TCP;
    push_outer(g, v6, src, dst);
    off += 8;
    if (dport == 2152)
        return dec_gtpu(d, len, off, orig_len, g);
    if (len < off + 8)
        return SK_TRUNC;
    uint32_t vni = be32(d + off + 4) >> 8;
    int why;
    if (dport == 6081) {
        if (d[off] >> 6)
            return SK_TUNNEL_OTHER;
        uint16_t etype = be16(d + off + 2);
        why = path_tunnel(g, TUNNEL_GENEVE, vni);
        if (why >= 0)
            return why;
        int64_t payload = off + 8 + (int64_t)(d[off] & 0x3F) * 4;
        if (etype == 0x6558)
            return dec_ether(d, len, payload, orig_len, g);
        if (etype == 0x0800)
            return dec_ipv4(d, len, payload, orig_len, g);
        if (etype == 0x86DD)
            return dec_ipv6(d, len, payload, orig_len, g);
        return SK_TUNNEL_OTHER;
    }
    why = path_tunnel(g, TUNNEL_VXLAN, vni);
    if (why >= 0)
        return why;
    return dec_ether(d, len, off + 8, orig_len, g);
}

static int dec_erspan(const uint8_t *d, int64_t len, int64_t off, int version, int64_t hlen,
                      uint32_t orig_len, Seg *g)
{
    if (len < off + hlen)
        return SK_TRUNC;
    if (d[off] >> 4 != version)
        return SK_TUNNEL_OTHER;
    if (version == 2) {
        if ((d[off + 10] >> 2) & 0x1F)
            return SK_TUNNEL_OTHER;
        if (d[off + 11] & 1)
            hlen += 8;
    }
    int why = path_tunnel(g, TUNNEL_ERSPAN, be16(d + off + 2) & 0x3FF);
    if (why >= 0)
        return why;
    return dec_ether(d, len, off + hlen, orig_len, g);
}

static int dec_gre(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    if (len < off + 4)
        return SK_TRUNC;
    uint16_t flags = be16(d + off);
    uint16_t proto = be16(d + off + 2);
    if (flags & (0x4000 | 0x0007))
        return SK_TUNNEL_OTHER;
    int64_t hlen =
        4 + 4 * (((flags & 0x8000) != 0) + ((flags & 0x2000) != 0) + ((flags & 0x1000) != 0));
    if (len < off + hlen)
        return SK_TRUNC;
    int why;
    if (flags & 0x2000)
        why = path_tunnel(g, TUNNEL_GRE_KEY, be32(d + off + ((flags & 0x8000) ? 8 : 4)));
    else
        why = path_tunnel(g, TUNNEL_GRE, 0);
    if (why >= 0)
        return why;
    int64_t pos = off + hlen;
    switch (proto) {
    case 0x0800:
        return dec_ipv4(d, len, pos, orig_len, g);
    case 0x86DD:
        return dec_ipv6(d, len, pos, orig_len, g);
    case 0x6558:
        return dec_ether(d, len, pos, orig_len, g);
    case 0x8847:
    case 0x8848:
        return dec_mpls(d, len, pos, orig_len, g);
    case 0x88BE:
        if (!(flags & 0x1000))
            return dec_ether(d, len, pos, orig_len, g);
        return dec_erspan(d, len, pos, 1, 8, orig_len, g);
    case 0x22EB:
        return dec_erspan(d, len, pos, 2, 12, orig_len, g);
    default:
        return SK_TUNNEL_OTHER;
    }
}

/* treason.decode._tunnel: an IP packet carrying IP, UDP or GRE. */
static int dec_tunnel(const uint8_t *d, int64_t len, int64_t off, uint8_t proto, int more_frag,
                      uint32_t orig_len, Seg *g, int v6, const uint8_t *src, const uint8_t *dst)
{
    if (more_frag)
        return SK_FRAGMENT;
    if (proto == 17)
        return dec_udp(d, len, off, orig_len, g, v6, src, dst);
    push_outer(g, v6, src, dst);
    if (proto == 47)
        return dec_gre(d, len, off, orig_len, g);
    int why = path_tunnel(g, TUNNEL_IP, 0);
    if (why >= 0)
        return why;
    if (proto == 4)
        return dec_ipv4(d, len, off, orig_len, g);
    return dec_ipv6(d, len, off, orig_len, g);
}

static inline int tunnel_proto(uint8_t p) { return p == 4 || p == 17 || p == 41 || p == 47; }

static int dec_ipv4(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    if (len < off + 20)
        return SK_TRUNC;
    const uint8_t *p = d + off;
    if (p[0] >> 4 != 4)
        return SK_MALFORMED;
    int64_t ihl = (p[0] & 0x0F) * 4;
    if (ihl < 20)
        return SK_MALFORMED;
    int64_t total_len = be16(p + 2);
    uint16_t ip_id = be16(p + 4);
    uint16_t frag = be16(p + 6);
    if (total_len == 0)
        total_len = (int64_t)orig_len - off;
    if (total_len < ihl)
        return SK_MALFORMED;
    if (frag & 0x1FFF)
        return SK_FRAGMENT;
    if (p[9] != 6 && !tunnel_proto(p[9]))
        return SK_NOT_TCP;
    if (len < off + ihl)
        return SK_TRUNC;
    if (p[9] != 6)
        return dec_tunnel(d, len, off + ihl, p[9], (frag & 0x2000) != 0, orig_len, g, 0, p + 12,
                          p + 16);
    g->v6 = 0;
    memset(g->src, 0, 16);
    memset(g->dst, 0, 16);
    memcpy(g->src, p + 12, 4);
    memcpy(g->dst, p + 16, 4);
    g->ip_id = ip_id;
    return dec_tcp(d, len, off + ihl, total_len - ihl, (frag & 0x2000) != 0, g);
}

static int dec_ipv6(const uint8_t *d, int64_t len, int64_t off, uint32_t orig_len, Seg *g)
{
    if (len < off + 40)
        return SK_TRUNC;
    const uint8_t *p = d + off;
    if (p[0] >> 4 != 6)
        return SK_MALFORMED;
    int64_t plen = be16(p + 4);
    if (plen == 0)
        plen = (int64_t)orig_len - off - 40;
    uint8_t nh = p[6];
    int64_t pos = off + 40;
    int64_t remaining = plen;
    int more_frag = 0;
    while (nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51) {
        int64_t hlen;
        if (remaining < 8)
            return SK_MALFORMED;
        if (len < pos + 8)
            return SK_TRUNC;
        if (nh == 44) {
            uint16_t of = be16(d + pos + 2);
            if (of & 0xFFF8)
                return SK_FRAGMENT;
            more_frag = of & 1;
            hlen = 8;
        } else if (nh == 51) {
            hlen = ((int64_t)d[pos + 1] + 2) * 4;
        } else {
            hlen = ((int64_t)d[pos + 1] + 1) * 8;
        }
        if (hlen > remaining)
            return SK_MALFORMED;
        nh = d[pos];
        pos += hlen;
        remaining -= hlen;
    }
    if (nh != 6) {
        if (tunnel_proto(nh))
            return dec_tunnel(d, len, pos, nh, more_frag, orig_len, g, 1, p + 8, p + 24);
        return SK_NOT_TCP;
    }
    g->v6 = 1;
    memcpy(g->src, p + 8, 16);
    memcpy(g->dst, p + 24, 16);
    g->ip_id = 0;
    return dec_tcp(d, len, pos, remaining, more_frag, g);
}

/* Where the IP packet of an NFLOG record starts, or -1 - a skip reason
 * (treason.decode.nflog_payload): a 4-byte header (family, version, group), then attributes
 * (length, type, value, padded to 4 bytes) in the capturing host's byte order, told by the
 * first one; NFULA_PAYLOAD (9) is the packet. */
static int64_t nflog_payload(const uint8_t *d, int64_t len)
{
    if (len < 4)
        return -1 - SK_TRUNC;
    int big = 0;
    int64_t off = 4;
    if (len >= 8) {
        uint32_t length = le16(d + 4), kind = le16(d + 6);
        big = !(length >= 4 && length <= len - 4 && kind < 0x100);
    }
    while (off + 4 <= len) {
        uint32_t length = rd16(d + off, big), kind = rd16(d + off + 2, big);
        if (length < 4)
            return -1 - SK_MALFORMED;
        if ((kind & 0x7FFF) == 9)
            return off + 4;
        off += (length + 3) & ~3u;
    }
    return -1 - SK_NOT_IP;
}

/* An NFLOG record's packet, IPv4 or IPv6 as its family (2, 10) or else its version says. */
static int dec_nflog(const uint8_t *d, int64_t len, uint32_t orig_len, Seg *g)
{
    int64_t off = nflog_payload(d, len);
    if (off < 0)
        return (int)(-1 - off);
    int family = d[0];
    if (family == 2 || (family != 10 && off < len && d[off] >> 4 == 4))
        return dec_ipv4(d, len, off, orig_len, g);
    return dec_ipv6(d, len, off, orig_len, g);
}

static int decode(uint32_t lt, const uint8_t *d, int64_t len, uint32_t orig_len, Seg *g)
{
    g->nvlan = g->tags = g->tunnels = g->nouter = 0;
    g->vlan = g->path;
    switch (lt) {
    case 1:
        if (len < 14)
            return SK_TRUNC;
        return dec_ethertype(d, len, 14, be16(d + 12), orig_len, g);
    case 276:
        if (len < 20)
            return SK_TRUNC;
        return dec_ethertype(d, len, 20, be16(d), orig_len, g);
    case 113:
        if (len < 16)
            return SK_TRUNC;
        return dec_ethertype(d, len, 16, be16(d + 14), orig_len, g);
    case 101:
    case 12:
    case 14:
        if (len < 1)
            return SK_TRUNC;
        if (d[0] >> 4 == 4)
            return dec_ipv4(d, len, 0, orig_len, g);
        if (d[0] >> 4 == 6)
            return dec_ipv6(d, len, 0, orig_len, g);
        return SK_NOT_IP;
    case 228:
        return dec_ipv4(d, len, 0, orig_len, g);
    case 229:
        return dec_ipv6(d, len, 0, orig_len, g);
    case 239:
        return dec_nflog(d, len, orig_len, g);
    case 0:
    case 108: {
        if (len < 4)
            return SK_TRUNC;
        uint32_t af = be32(d);
        if (af > 0xFFFF)
            af = le32(d);
        if (af == 2)
            return dec_ipv4(d, len, 4, orig_len, g);
        if (af == 24 || af == 28 || af == 30)
            return dec_ipv6(d, len, 4, orig_len, g);
        return SK_NOT_IP;
    }
    default:
        return SK_UNKNOWN_LT;
    }
}

/* -- endpoint model (treason.model.Connection) --------------------------------------------- */

static void side_init(Side *s)
{
    memset(s, 0, sizeof *s);
    s->ws_option = -1;
    s->snd_wscale = -1;
    s->feasible = ALL_SHIFTS;
}

static inline uint32_t side_edge(const Side *s, int shift)
{
    return s->snd_wl2 + ((uint32_t)s->snd_wnd << shift);
}

static inline uint16_t *conn_vlan(Conn *c)
{
    return c->nvlan > VLAN_INLINE ? c->vlan_ext : c->vlan_in;
}

static void conn_reset_state(Conn *c, const Seg *g)
{
    free(c->a.unk);
    free(c->b.unk);
    side_init(&c->a);
    side_init(&c->b);
    c->client = 0;
    c->syn_seen = c->synack_seen = c->established = c->reset = 0;
    c->syn_frame = 0;
    /* side a is the sender of the connection's first segment */
    c->a_is_lo = (addr_eq(g->src, c->lo_addr) && g->sport == c->lo_port);
}

static inline Side *side_of(Conn *c, int which) { return which == 1 ? &c->a : &c->b; }

static int reusable_by(Conn *c, const Seg *g)
{
    if (c->reset || (c->a.fin && c->b.fin))
        return 1;
    if (!c->established && c->client) {
        Side *cl = side_of(c, c->client);
        return g->seq != cl->isn; /* the client's ISN is always set with the client */
    }
    return 0;
}

static PyObject *py_int128(i128 v)
{
    if (v >= (i128)INT64_MIN && v <= (i128)INT64_MAX)
        return PyLong_FromLongLong((long long)v);
    int neg = v < 0;
    u128 m = neg ? (u128)(-(v + 1)) + 1 : (u128)v;
    PyObject *hi = PyLong_FromUnsignedLongLong((unsigned long long)(m >> 64));
    PyObject *lo = PyLong_FromUnsignedLongLong((unsigned long long)m);
    PyObject *sh = PyLong_FromLong(64);
    PyObject *r = NULL, *t = NULL;
    if (hi && lo && sh && (t = PyNumber_Lshift(hi, sh)))
        r = PyNumber_Or(t, lo);
    Py_XDECREF(t);
    Py_XDECREF(hi);
    Py_XDECREF(lo);
    Py_XDECREF(sh);
    if (r && neg) {
        PyObject *n = PyNumber_Negative(r);
        Py_DECREF(r);
        r = n;
    }
    return r;
}

static inline EvRec *ev_at(Scanner *S, uint64_t id) { return &S->queue[id & (S->q_cap - 1)]; }

static inline uint16_t *ev_vlan(EvRec *e)
{
    return e->nvlan > VLAN_INLINE ? e->vlan_ext : e->vlan_in;
}

static int queue_grow(Scanner *S)
{
    uint64_t cap = S->q_cap ? S->q_cap * 2 : 64;
    EvRec *q = malloc(cap * sizeof *q);
    if (!q)
        return -1;
    for (uint64_t id = S->q_head; id != S->q_tail; id++)
        q[id & (cap - 1)] = *ev_at(S, id);
    free(S->queue);
    S->queue = q;
    S->q_cap = cap;
    return 0;
}

/* Model._event: the event of an accepted update, queued behind every earlier one; its id. */
static uint64_t emit(Scanner *S, Conn *c, const Seg *g, Side *s, int shift, int cls,
                     int definite)
{
    if (S->q_tail - S->q_head == S->q_cap && queue_grow(S) < 0)
        goto nomem;
    uint64_t id = S->q_tail;
    EvRec *e = ev_at(S, id);
    /* the path of the segment that made the event (a paired connection has two) */
    e->vlan_ext = NULL;
    e->nvlan = g->nvlan;
    if (g->nvlan > VLAN_INLINE) {
        e->vlan_ext = malloc(g->nvlan * sizeof(uint16_t));
        if (!e->vlan_ext)
            goto nomem;
    }
    memcpy(ev_vlan(e), g->vlan, g->nvlan * sizeof(uint16_t));
    e->outer = NULL;
    if (g->nouter) {
        char raw[(MAX_TUNNELS + 1) * 33];
        Py_ssize_t n = 0;
        for (uint32_t i = 0; i < g->nouter; i++) {
            int alen = g->outer_v6[i] ? 16 : 4;
            raw[n++] = (char)g->outer_v6[i];
            memcpy(raw + n, g->outer[i][0], alen);
            memcpy(raw + n + alen, g->outer[i][1], alen);
            n += 2 * alen;
        }
        e->outer = PyBytes_FromStringAndSize(raw, n);
        if (!e->outer) {
            free(e->vlan_ext);
            S->py_error = 1;
            return 0;
        }
    }
    uint32_t old_edge = side_edge(s, shift);
    uint32_t new_edge = g->ack + ((uint32_t)g->win << shift);
    int32_t beyond = sdiff(s->snd_nxt, new_edge);
    e->frame = g->frame;
    e->ts = g->ts;
    e->deadline = 0;
    e->v6 = (uint8_t)g->v6;
    memcpy(e->src, g->src, 16);
    memcpy(e->dst, g->dst, 16);
    e->sport = g->sport;
    e->dport = g->dport;
    e->cls = (uint8_t)cls;
    e->closing = c->a.fin || c->b.fin;
    e->definite = (uint8_t)definite;
    e->old_edge = old_edge;
    e->new_edge = new_edge;
    e->shrink_bytes = sdiff(old_edge, new_edge);
    e->beyond_bytes = beyond < 0 ? 0 : beyond;
    e->snd_una = s->snd_una;
    e->snd_nxt = s->snd_nxt;
    e->ack = g->ack;
    e->win = g->win;
    e->shift = (uint8_t)shift;
    e->scale_known = s->snd_wscale >= 0;
    e->open = 0;
    e->side = 0;
    e->conn = NIL;
    S->q_tail++;
    return id + 1;
nomem:
    S->py_error = 1;
    PyErr_NoMemory();
    return 0;
}

/* Model._in_flight: new data after a zero window left before the sender saw that window. */
static void in_flight(Scanner *S, Side *sender, uint32_t snd_nxt)
{
    EvRec *e = ev_at(S, sender->held - 1);
    int32_t beyond = sdiff(snd_nxt, e->new_edge);
    e->snd_nxt = snd_nxt;
    e->beyond_bytes = beyond < 0 ? 0 : beyond;
    if (before(e->snd_una, snd_nxt)) {
        e->cls = CLS_KERNEL;
        e->definite = 1;
    }
}

/* The event side s holds open (if any) is final. */
static inline void unhold(Scanner *S, Side *s)
{
    if (s->held) {
        ev_at(S, s->held - 1)->open = 0;
        s->held = 0;
    }
}

static PyObject *ev_tuple(EvRec *e)
{
    int alen = e->v6 ? 16 : 4;
    uint16_t *vl = ev_vlan(e);
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nvlan; i += (vl[i] & PATH_TUNNEL) ? 3 : 1)
        n++;
    PyObject *path = PyTuple_New(n);
    if (!path)
        return NULL;
    for (uint32_t i = 0, k = 0; i < e->nvlan; k++) {
        PyObject *v;
        if (vl[i] & PATH_TUNNEL) {
            uint64_t kind = vl[i] & ~PATH_TUNNEL;
            v = PyLong_FromUnsignedLongLong(kind << 32 | (uint64_t)vl[i + 1] << 16 | vl[i + 2]);
            i += 3;
        } else {
            v = PyLong_FromLong(vl[i]);
            i += 1;
        }
        if (!v) {
            Py_DECREF(path);
            return NULL;
        }
        PyTuple_SET_ITEM(path, k, v);
    }
    PyObject *ts = py_int128(e->ts);
    if (!ts) {
        Py_DECREF(path);
        return NULL;
    }
    PyObject *outer = e->outer ? e->outer : Py_None;
    return Py_BuildValue("(KNiy#iy#iNiiikkiikkkiiiO)", (unsigned long long)e->frame, ts,
                         (int)e->v6, e->src, (Py_ssize_t)alen, (int)e->sport, e->dst,
                         (Py_ssize_t)alen, (int)e->dport, path, (int)e->cls, (int)e->closing,
                         (int)e->definite, (unsigned long)e->old_edge,
                         (unsigned long)e->new_edge, (int)e->shrink_bytes,
                         (int)e->beyond_bytes, (unsigned long)e->snd_una,
                         (unsigned long)e->snd_nxt, (unsigned long)e->ack, (int)e->win,
                         (int)e->shift, (int)e->scale_known, outer);
}

/* FlowTable._release: final events at the front of the queue go to Python, in frame order. */
static void release(Scanner *S)
{
    while (S->q_head != S->q_tail) {
        EvRec *e = ev_at(S, S->q_head);
        if (e->open)
            break; /* still open: later events wait behind it */
        PyObject *ev = ev_tuple(e);
        if (!ev || PyList_Append(S->events, ev) < 0) {
            Py_XDECREF(ev);
            S->py_error = 1;
            return;
        }
        Py_DECREF(ev);
        free(e->vlan_ext);
        e->vlan_ext = NULL;
        Py_CLEAR(e->outer);
        S->q_head++;
    }
}

/* The side an open event is held by. */
static inline Side *ev_holder(Scanner *S, EvRec *e)
{
    Conn *c = &S->conns[e->conn];
    return e->side == 1 ? &c->a : &c->b;
}

/*
 * FlowTable._close_due: open events whose time is up become final. Deadlines grow with the
 * queue (the clock never goes back), and after release() the front is open, so only the front
 * needs looking at.
 */
static void close_due(Scanner *S, i128 now)
{
    while (S->q_head != S->q_tail) {
        EvRec *e = ev_at(S, S->q_head);
        if (e->open) {
            if (e->deadline > now)
                return;
            unhold(S, ev_holder(S, e));
        }
        release(S);
        if (S->py_error)
            return;
    }
}

/* FlowTable.flush: the capture is over, every open event is final. */
static void flush_all(Scanner *S)
{
    for (uint64_t id = S->q_head; id != S->q_tail; id++) {
        EvRec *e = ev_at(S, id);
        if (e->open)
            unhold(S, ev_holder(S, e));
    }
    release(S);
}

/* The class of this update under shift; *full says whether it is a full shrink there. */
static int classify(const Seg *g, const Side *s, int shift, int *full)
{
    uint32_t new_edge = g->ack + ((uint32_t)g->win << shift);
    int32_t retreat = sdiff(side_edge(s, shift), new_edge);
    *full = 0;
    if (retreat <= 0)
        return CLS_NONE;
    *full = retreat >= (1 << shift);
    if (g->win == 0 && before(s->snd_una, s->snd_nxt))
        return CLS_KERNEL;
    if (!*full)
        return CLS_RETRACTION;
    if (before(new_edge, s->snd_nxt))
        return CLS_BEYOND;
    return CLS_SHRINK;
}

/* Model._infer: judge an update under every feasible shift when the scale is unknown. */
static int infer(const Seg *g, Side *s, int *shift, int *definite)
{
    int classes[MAX_SHIFT + 1];
    uint32_t *counts = s->unk->shrink_counts;
    uint32_t fewest = UINT32_MAX;
    int moved = -1;
    for (int k = 0; k <= MAX_SHIFT; k++) {
        classes[k] = -1;
        if (s->feasible >> k & 1) {
            int full;
            classes[k] = classify(g, s, k, &full);
            if (full)
                counts[k]++;
            if (moved < 0 && classes[k] > CLS_NONE)
                moved = k;
        }
    }
    if (g->win == 0 && before(s->snd_una, s->snd_nxt)) {
        if (moved < 0)
            return CLS_NONE;
        *shift = moved;
        *definite = 1;
        return CLS_KERNEL;
    }
    for (int k = 0; k <= MAX_SHIFT; k++)
        if (classes[k] >= 0 && counts[k] < fewest)
            fewest = counts[k];
    int n_plausible = 0, n_hits = 0, first = -1;
    for (int k = 0; k <= MAX_SHIFT; k++) {
        if (classes[k] < 0 || counts[k] != fewest)
            continue;
        n_plausible++;
        if (classes[k] >= CLS_SHRINK) {
            if (first < 0)
                first = k;
            n_hits++;
        }
    }
    if (!n_hits) {
        for (int k = 0; k <= MAX_SHIFT; k++) {
            if (classes[k] > CLS_NONE && counts[k] == fewest) {
                if (first < 0)
                    first = k;
                n_hits++;
            }
        }
    }
    if (!n_hits)
        return CLS_NONE;
    *shift = first;
    *definite = n_hits == n_plausible;
    return classes[first];
}

/* Model._compare: the id + 1 of the event this update makes, 0 if none. */
static uint64_t compare(Scanner *S, Conn *c, const Seg *g, Side *s)
{
    int shift = 0, cls, definite = 1;
    if (s->snd_wscale >= 0) {
        int full;
        shift = s->snd_wscale;
        cls = classify(g, s, shift, &full);
    } else {
        cls = infer(g, s, &shift, &definite);
    }
    if (cls == CLS_NONE)
        return 0;
    return emit(S, c, g, s, shift, cls, definite);
}

static void rule_out_shifts(Scanner *S, Side *sender, uint32_t data_end)
{
    uint16_t feasible = sender->feasible;
    for (int k = 0; k <= MAX_SHIFT; k++)
        if ((feasible >> k & 1) && after(data_end, sender->unk->max_edge[k]))
            feasible &= (uint16_t) ~(1u << k);
    if (feasible)
        sender->feasible = feasible;
    else
        S->model[M_OVERRUNS]++;
}

static void sent(Scanner *S, const Seg *g, Side *sender)
{
    int fin = g->flags & F_FIN ? 1 : 0;
    if (fin)
        sender->fin = 1;
    uint32_t end = g->seq + (uint32_t)g->payload_len + (uint32_t)fin;
    if (!(sender->has & H_NXT)) {
        sender->snd_nxt = end;
        sender->has |= H_NXT;
        return;
    }
    if (!after(end, sender->snd_nxt))
        return;
    if ((sender->has & H_UNA) && g->seq == sender->snd_una - 1 && g->payload_len <= 1)
        return;
    if (sender->snd_wscale < 0 && sender->unk)
        rule_out_shifts(S, sender, g->seq + (uint32_t)g->payload_len);
    sender->snd_nxt = end;
    if (sender->held)
        in_flight(S, sender, end);
}

static void window_update(Scanner *S, Conn *c, const Seg *g, Side *r, Side *s)
{
    if (!c->established) {
        /* mid-connection, or the client left SYN-SENT: the SYN-ACK was not captured */
        c->established = 1;
        if (c->client) {
            int8_t w = side_of(c, c->client)->ws_option < 0 ? 0 : -1;
            r->snd_wscale = w;
            s->snd_wscale = w;
        }
    }
    uint32_t ack = g->ack;
    if ((s->has & H_UNA) && before(ack, s->snd_una)) {
        S->model[M_OLD_ACKS]++;
        return;
    }
    if ((s->has & H_FAR) && after(ack, s->furthest) &&
        (!(s->has & H_NXT) || after(ack, s->snd_nxt))) {
        /* an ACK of data past every edge ever offered: corrupt, never moves SND.UNA */
        S->model[M_IMPOSSIBLE]++;
        return;
    }
    if (!(s->has & H_UNA) || after(ack, s->snd_una)) {
        s->snd_una = ack;
        s->has |= H_UNA;
    }
    if (!(s->has & H_NXT) || before(s->snd_nxt, ack)) {
        if (s->has & H_NXT)
            S->model[M_UNSEEN]++;
        s->snd_nxt = ack;
        s->has |= H_NXT;
    }
    if ((s->has & H_WL) &&
        !(before(s->snd_wl1, g->seq) || (s->snd_wl1 == g->seq && !before(ack, s->snd_wl2)))) {
        S->model[M_STALE]++;
        return;
    }
    if (g->has_tsval) {
        /* PAWS (RFC 7323 section 5): an update stamped before the last accepted one */
        if ((s->has & H_TS) && before(g->tsval, s->ts_recent)) {
            S->model[M_PAWS]++;
            return;
        }
        s->ts_recent = g->tsval;
        s->has |= H_TS;
    }
    uint64_t event = s->has & H_WND ? compare(S, c, g, s) : 0;
    if (g->win) {
        unhold(S, s); /* the window reopened: a held zero-window event is final */
    } else if (event) {
        unhold(S, s);
        EvRec *e = ev_at(S, event - 1);
        e->open = 1;
        e->conn = (uint32_t)(c - S->conns);
        e->side = s == &c->a ? 1 : 2;
        e->deadline = S->now + HOLD_NS;
        s->held = event;
    }
    s->snd_wl1 = g->seq;
    s->snd_wl2 = ack;
    s->snd_wnd = g->win;
    s->has |= H_WL | H_WND;
    uint32_t edge = side_edge(s, s->snd_wscale < 0 ? MAX_SHIFT : s->snd_wscale);
    if (!(s->has & H_FAR) || after(edge, s->furthest) || before(s->furthest, ack)) {
        s->furthest = edge;
        s->has |= H_FAR;
    }
    if (s->snd_wscale < 0) {
        if (!s->unk) {
            s->unk = calloc(1, sizeof *s->unk);
            if (!s->unk) {
                S->py_error = 1;
                PyErr_NoMemory();
                return;
            }
            for (int k = 0; k <= MAX_SHIFT; k++)
                s->unk->max_edge[k] = side_edge(s, k);
        } else {
            for (int k = 0; k <= MAX_SHIFT; k++) {
                uint32_t e = side_edge(s, k);
                if (after(e, s->unk->max_edge[k]))
                    s->unk->max_edge[k] = e;
            }
        }
    }
}

static void syn(Scanner *S, Conn *c, const Seg *g, Side *sender, Side *peer, int sender_id)
{
    int ws = g->ws < 0 ? -1 : (g->ws > MAX_SHIFT ? MAX_SHIFT : g->ws);
    uint32_t end = g->seq + 1 + (uint32_t)g->payload_len;
    if (!(g->flags & F_ACK)) {
        if (c->syn_seen || c->established) {
            S->model[M_IGNORED_SYNS]++;
            return;
        }
        c->syn_seen = 1;
        c->syn_frame = g->frame;
        c->client = (uint8_t)sender_id;
        sender->isn = g->seq;
        sender->ws_option = (int8_t)ws;
        sender->snd_una = g->seq;
        sender->snd_nxt = end;
        sender->has |= H_ISN | H_UNA | H_NXT;
        return;
    }
    if (c->synack_seen || c->established || c->client == sender_id) {
        S->model[M_IGNORED_SYNS]++;
        return;
    }
    Side *client = c->client ? side_of(c, c->client) : NULL;
    if (client && g->ack != client->isn + 1) {
        S->model[M_IGNORED_SYNS]++;
        return;
    }
    c->synack_seen = 1;
    c->established = 1;
    c->client = (uint8_t)(3 - sender_id);
    sender->isn = g->seq;
    sender->ws_option = (int8_t)ws;
    sender->snd_una = g->seq;
    sender->snd_nxt = end;
    sender->has |= H_ISN | H_UNA | H_NXT;
    peer->snd_una = g->ack;
    if (!(peer->has & H_NXT) || before(peer->snd_nxt, g->ack))
        peer->snd_nxt = g->ack;
    peer->snd_wl1 = g->seq;
    peer->snd_wl2 = g->ack;
    peer->has |= H_UNA | H_NXT | H_WL;
    if (!client) {
        peer->snd_wscale = (int8_t)ws;
        sender->snd_wscale = ws < 0 ? 0 : -1;
    } else if (ws >= 0 && client->ws_option >= 0) {
        peer->snd_wscale = (int8_t)ws;
        sender->snd_wscale = client->ws_option;
    } else {
        peer->snd_wscale = sender->snd_wscale = 0;
    }
}

static void conn_process(Scanner *S, Conn *c, const Seg *g)
{
    int a_addr_match =
        c->a_is_lo ? (addr_eq(g->src, c->lo_addr) && g->sport == c->lo_port)
                   : (addr_eq(g->src, c->hi_addr) && g->sport == c->hi_port);
    int sender_id = a_addr_match ? 1 : 2;
    Side *sender = side_of(c, sender_id), *peer = side_of(c, 3 - sender_id);
    if ((sender->has & H_COPY) && sender->c_ip_id == g->ip_id &&
        sender->c_checksum == g->checksum && sender->c_seq == g->seq && sender->c_ack == g->ack &&
        sender->c_win == g->win && sender->c_flags == g->flags &&
        sender->c_plen == g->payload_len) {
        S->model[M_DUPLICATES]++;
        return;
    }
    sender->has |= H_COPY;
    sender->c_ip_id = g->ip_id;
    sender->c_checksum = g->checksum;
    sender->c_seq = g->seq;
    sender->c_ack = g->ack;
    sender->c_win = g->win;
    sender->c_flags = g->flags;
    sender->c_plen = g->payload_len;
    if (g->flags & F_RST) {
        c->reset = 1;
        S->model[M_RESETS]++;
        return;
    }
    if (g->flags & F_SYN) {
        syn(S, c, g, sender, peer, sender_id);
        return;
    }
    if (!c->established && c->client && c->client != sender_id) {
        /* RFC 9293 section 3.10.7.3: in SYN-SENT only a SYN-ACK (or RST) is taken */
        S->model[M_STRAY]++;
        return;
    }
    sent(S, g, sender);
    if (g->flags & F_ACK)
        window_update(S, c, g, sender, peer);
}

/* -- flow marks (treason live --write) ---------------------------------------------------------- */

#define MARK_EVENT 1 /* the segment made an event */
#define MARK_SHOWN 2 /* ... not a retraction when made */
#define MARK_ZERO 4 /* ... of a zero window (it may still become kernel-visible) */

static int mark_append(Scanner *S, PyObject *entry)
{
    if (!entry || PyList_Append(S->marks, entry) < 0) {
        Py_XDECREF(entry);
        S->py_error = 1;
        return -1;
    }
    Py_DECREF(entry);
    return 0;
}

/*
 * A connection's flow key as bytes, one value per key of the model's (FlowTable.key): family,
 * both endpoints in canonical order (16 address bytes, 2 port bytes each), then the tag path of
 * its first direction (VLAN ids and tunnel entries) as the big-endian 16-bit words `path_tag`
 * and `path_entry` make. A paired connection has this one key for both directions.
 */
static PyObject *conn_key_bytes(Conn *c)
{
    uint16_t *vl = conn_vlan(c);
    size_t n = 1 + 2 * 18;
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n + 2 * (size_t)c->nvlan));
    if (!bytes)
        return NULL;
    uint8_t *key = (uint8_t *)PyBytes_AS_STRING(bytes);
    key[0] = c->v6;
    memcpy(key + 1, c->lo_addr, 16);
    key[17] = (uint8_t)(c->lo_port >> 8);
    key[18] = (uint8_t)c->lo_port;
    memcpy(key + 19, c->hi_addr, 16);
    key[35] = (uint8_t)(c->hi_port >> 8);
    key[36] = (uint8_t)c->hi_port;
    for (uint32_t i = 0; i < c->nvlan; i++) {
        key[n + 2 * i] = (uint8_t)(vl[i] >> 8);
        key[n + 2 * i + 1] = (uint8_t)vl[i];
    }
    return bytes;
}

/*
 * What the per-flow recorder needs of each segment, as FlowTable.key and the event returned by
 * FlowTable.process give it: the flow key and whether the segment made an event.
 */
static int mark_segment(Scanner *S, Conn *c, uint64_t q_before)
{
    PyObject *bytes = conn_key_bytes(c);
    if (!bytes) {
        S->py_error = 1;
        return -1;
    }
    int bits = 0;
    if (S->q_tail != q_before) {
        EvRec *e = ev_at(S, S->q_tail - 1);
        bits = MARK_EVENT | (e->cls != CLS_RETRACTION ? MARK_SHOWN : 0) |
               (e->win == 0 ? MARK_ZERO : 0);
    }
    return mark_append(S, Py_BuildValue("(Ni)", bytes, bits));
}

/* -- plot series (treason.series.SeriesCollector) -------------------------------------------- */

/*
 * treason plot draws, for the connections that made an event, the segments and ACKs around
 * them, collected in the same pass that finds the events. The rule (treason/series.py says why)
 * must stay the reference collector's, point for point: per connection, points are numbered in
 * capture order; all are kept until `cap` sampled points, then the sampling stride doubles and
 * sampled points off the new stride are dropped; a segment that makes an event is kept with the
 * `before` points before it and the `after` points after it, never thinned.
 *
 * Most connections are short (a SYN flood: one packet each), so a series is one allocation, its
 * header and its first points together, grown by doubling; the ring of recent points exists
 * only once a connection is long enough to be thinned. The series pointers live beside the
 * flow table (Scanner.sers, by connection index), allocated only with series(), so a scan that
 * collects none keeps its connections at their size.
 */

typedef struct {
    int64_t ts;
    uint64_t frame;
    uint32_t seq, ack, plen;
    uint16_t win;
    uint8_t flags, from_lo;
} SPoint;
/* SPoint as a struct format, exported: treason.series.POINT must say the same. */
#define SERIES_POINT "=qQIIIHBB"

#define DETAIL (1ULL << 63) /* in SKept.idx: a point around an event, never thinned */

typedef struct {
    SPoint p;
    uint64_t idx; /* the point's number in its connection, | DETAIL */
} SKept;

typedef struct Series {
    uint64_t n, stride, events;
    uint32_t n_kept, cap_kept, overview, after;
    SKept *ring; /* NULL until the first thinning; then the last `before` points, a circle */
    uint32_t ring_len, ring_start;
    SKept kept[];
} Series;

#define SERIES_FIRST 2 /* points in a new series' first allocation */

static inline uint64_t kidx(const SKept *k) { return k->idx & ~DETAIL; }
static inline int kdetail(const SKept *k) { return (k->idx & DETAIL) != 0; }

static void series_free(Series *r)
{
    if (!r)
        return;
    free(r->ring);
    free(r);
}

static int series_push(Series **slot, const SPoint *p, uint64_t idx, int detail)
{
    Series *r = *slot;
    if (r->n_kept == r->cap_kept) {
        if (r->cap_kept > UINT32_MAX / 2)
            return -1;
        uint32_t cap = r->cap_kept * 2;
        r = realloc(r, sizeof *r + (size_t)cap * sizeof(SKept));
        if (!r)
            return -1;
        r->cap_kept = cap;
        *slot = r;
    }
    SKept *k = &r->kept[r->n_kept++];
    k->p = *p;
    k->idx = idx | (detail ? DETAIL : 0);
    if (!detail)
        r->overview++;
    return 0;
}

static inline SKept *ring_at(Series *r, uint32_t before, uint32_t i)
{
    return &r->ring[(r->ring_start + i) % before];
}

/* The `before` points before index i are kept as detail (SeriesCollector: _Conn._context). */
static int series_context(Series **slot, uint32_t before, uint64_t i)
{
    Series *r = *slot;
    uint64_t lo = i > before ? i - before : 0;
    if (!r->ring) { /* stride 1 so far: they are all kept already */
        for (uint32_t j = r->n_kept; j-- > 0;) {
            SKept *k = &r->kept[j];
            if (kidx(k) < lo)
                break;
            if (!kdetail(k)) {
                k->idx |= DETAIL;
                r->overview--;
            }
        }
        return 0;
    }
    while (r->n_kept && kidx(&r->kept[r->n_kept - 1]) >= lo) {
        if (!kdetail(&r->kept[--r->n_kept]))
            r->overview--;
    }
    uint32_t ring_len = r->ring_len;
    for (uint32_t j = 0; j < ring_len; j++) { /* a push may move the series: *slot */
        SKept k = *ring_at(*slot, before, j);
        if (series_push(slot, &k.p, kidx(&k), 1) < 0)
            return -1;
    }
    return 0;
}

/* The stride doubles; the ring starts as the last `before` points (all kept until now). */
static int series_thin(Series *r, uint32_t before)
{
    if (!r->ring) {
        r->ring = malloc((before ? before : 1) * sizeof *r->ring);
        if (!r->ring)
            return -1;
        uint32_t end = r->n_kept - 1; /* without the point being added */
        uint32_t start = end > before ? end - before : 0;
        r->ring_len = end - start;
        r->ring_start = 0;
        for (uint32_t j = start; j < end; j++)
            r->ring[j - start] = r->kept[j];
    }
    r->stride *= 2;
    uint32_t out = 0, overview = 0;
    for (uint32_t j = 0; j < r->n_kept; j++) {
        SKept *k = &r->kept[j];
        if (kdetail(k) || kidx(k) % r->stride == 0) {
            r->kept[out++] = *k;
            overview += !kdetail(k);
        }
    }
    r->n_kept = out;
    r->overview = overview;
    return 0;
}

static int series_add(Scanner *S, uint32_t idx, const Seg *g, int made_event)
{
    Conn *c = &S->conns[idx];
    Series **slot = &S->sers[idx];
    if (!*slot) {
        Series *r = malloc(sizeof *r + SERIES_FIRST * sizeof(SKept));
        if (!r)
            return -1;
        memset(r, 0, sizeof *r);
        r->stride = 1;
        r->cap_kept = SERIES_FIRST;
        *slot = r;
    }
    SPoint p;
    i128 ts = g->ts;
    p.ts = ts > INT64_MAX ? INT64_MAX : ts < INT64_MIN ? INT64_MIN : (int64_t)ts;
    p.frame = g->frame;
    p.seq = g->seq;
    p.ack = g->ack;
    p.plen = g->payload_len > UINT32_MAX ? UINT32_MAX : (uint32_t)g->payload_len;
    p.win = g->win;
    p.flags = g->flags;
    p.from_lo = addr_eq(g->src, c->lo_addr) && g->sport == c->lo_port;
    uint64_t i = (*slot)->n++;
    uint32_t before = S->s_before;
    if (made_event) {
        (*slot)->events++;
        if (series_context(slot, before, i) < 0 || series_push(slot, &p, i, 1) < 0)
            return -1;
        (*slot)->after = S->s_after;
    } else if ((*slot)->after) {
        (*slot)->after--;
        if (series_push(slot, &p, i, 1) < 0)
            return -1;
    } else if (i % (*slot)->stride == 0) {
        if (series_push(slot, &p, i, 0) < 0)
            return -1;
        if ((*slot)->overview > S->s_cap && series_thin(*slot, before) < 0)
            return -1;
    }
    Series *r = *slot;
    if (r->ring && before) {
        if (r->ring_len < before) {
            r->ring[(r->ring_start + r->ring_len++) % before] = (SKept){p, i};
        } else {
            r->ring[r->ring_start] = (SKept){p, i};
            r->ring_start = (r->ring_start + 1) % before;
        }
    }
    return 0;
}

/* (key bytes, packed points) of a connection's series. */
static PyObject *series_tuple(Scanner *S, Conn *c, Series *r)
{
    /* the last point seen ends the graph, kept or not (the newest ring entry) */
    SKept *last = r->ring && r->ring_len ? ring_at(r, S->s_before, r->ring_len - 1) : NULL;
    int extra = last && r->n_kept && kidx(last) != kidx(&r->kept[r->n_kept - 1]);
    uint64_t n = (uint64_t)r->n_kept + (uint64_t)extra;
    PyObject *pts = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n * sizeof(SPoint)));
    if (!pts)
        return NULL;
    SPoint *out = (SPoint *)PyBytes_AS_STRING(pts);
    for (uint32_t j = 0; j < r->n_kept; j++)
        out[j] = r->kept[j].p;
    if (extra)
        out[r->n_kept] = last->p;
    return Py_BuildValue("(NN)", conn_key_bytes(c), pts);
}

/* A connection ends (eviction): its series is kept when it made an event, freed otherwise. */
static int series_end(Scanner *S, uint32_t idx)
{
    int rc = 0;
    Series *r = S->sers[idx];
    if (r && r->events && S->series_done) {
        PyObject *t = series_tuple(S, &S->conns[idx], r);
        if (!t || PyList_Append(S->series_done, t) < 0)
            rc = -1;
        Py_XDECREF(t);
    }
    series_free(r);
    S->sers[idx] = NULL;
    return rc;
}

/* Room for the series of connection indexes below cap (new entries NULL). */
static int series_fit(Scanner *S, uint32_t cap)
{
    if (cap <= S->cap_sers)
        return 0;
    Series **p = realloc(S->sers, (size_t)cap * sizeof *p);
    if (!p)
        return -1;
    memset(p + S->cap_sers, 0, (size_t)(cap - S->cap_sers) * sizeof *p);
    S->sers = p;
    S->cap_sers = cap;
    return 0;
}

/* -- capture filter (treason.capfilter: classic BPF, as libpcap's bpf_filter) --------------- */

/*
 * `scan --filter` / `plot --filter`: a tcpdump expression compiled by libpcap for each link type,
 * run on every frame before it is decoded, as `live --filter` runs it in the kernel. A frame the
 * program rejects is counted (counters()["filtered"]) and otherwise ignored; frame numbers stay
 * the file's.
 * The interpreter follows libpcap's bpf_filter: loads outside the packet and division by zero
 * reject the frame; BPF_LEN is the length on the wire.
 */

typedef struct {
    uint16_t code;
    uint8_t jt, jf;
    uint32_t k;
} BpfInsn;

typedef struct BpfProg {
    uint32_t linktype;
    uint32_t n;
    BpfInsn *insns;
} BpfProg;

#define BPF_MAX_INSNS 4096
/* The skip reason of the frames a filter rejects (treason.capfilter.FILTERED), exported. */
#define FILTERED_NAME "filtered out"

static int bpf_load(const uint8_t *p, int64_t buflen, uint64_t off, int size, uint32_t *out)
{
    if (off + (uint64_t)size > (uint64_t)buflen)
        return 0;
    p += off;
    *out = size == 4 ? be32(p) : size == 2 ? be16(p) : p[0];
    return 1;
}

/* The program's verdict on one frame: nonzero to keep it. */
static uint32_t bpf_run(const BpfProg *f, const uint8_t *p, int64_t buflen, uint32_t wirelen)
{
    uint32_t A = 0, X = 0, M[16] = {0}, v;
    for (uint32_t pc = 0; pc < f->n; pc++) {
        const BpfInsn *i = &f->insns[pc];
        int size = 4;
        switch (i->code & 0x07) {
        case 0x00: /* LD */
        case 0x01: /* LDX */
            size = (i->code & 0x18) == 0x10 ? 1 : (i->code & 0x18) == 0x08 ? 2 : 4;
            switch (i->code & 0xe0) {
            case 0x00: /* IMM */
                v = i->k;
                break;
            case 0x20: /* ABS */
                if (!bpf_load(p, buflen, i->k, size, &v))
                    return 0;
                break;
            case 0x40: /* IND */
                if (!bpf_load(p, buflen, (uint64_t)X + i->k, size, &v))
                    return 0;
                break;
            case 0x60: /* MEM */
                v = M[i->k & 15];
                break;
            case 0x80: /* LEN */
                v = wirelen;
                break;
            case 0xa0: /* MSH: 4 * (P[k] & 0xf) */
                if (!bpf_load(p, buflen, i->k, 1, &v))
                    return 0;
                v = (v & 0xf) << 2;
                break;
            default:
                return 0;
            }
            if ((i->code & 0x07) == 0x00)
                A = v;
            else
                X = v;
            break;
        case 0x02: /* ST */
            M[i->k & 15] = A;
            break;
        case 0x03: /* STX */
            M[i->k & 15] = X;
            break;
        case 0x04: { /* ALU */
            uint32_t s = (i->code & 0x08) ? X : i->k;
            switch (i->code & 0xf0) {
            case 0x00: A += s; break;
            case 0x10: A -= s; break;
            case 0x20: A *= s; break;
            case 0x30: if (!s) return 0; A /= s; break;
            case 0x40: A |= s; break;
            case 0x50: A &= s; break;
            case 0x60: A = s < 32 ? A << s : 0; break;
            case 0x70: A = s < 32 ? A >> s : 0; break;
            case 0x80: A = (uint32_t)-(int64_t)A; break;
            case 0x90: if (!s) return 0; A %= s; break;
            case 0xa0: A ^= s; break;
            default: return 0;
            }
            break;
        }
        case 0x05: { /* JMP */
            uint32_t s = (i->code & 0x08) ? X : i->k;
            int taken;
            switch (i->code & 0xf0) {
            case 0x00: pc += i->k; continue; /* JA */
            case 0x10: taken = A == s; break;
            case 0x20: taken = A > s; break;
            case 0x30: taken = A >= s; break;
            case 0x40: taken = (A & s) != 0; break;
            default: return 0;
            }
            pc += taken ? i->jt : i->jf;
            break;
        }
        case 0x06: /* RET */
            return (i->code & 0x18) == 0x10 ? A : i->k;
        case 0x07: /* MISC */
            if (i->code & 0x80)
                A = X; /* TXA */
            else
                X = A; /* TAX */
            break;
        }
    }
    return 0;
}

/* Whether a frame of link type lt passes the filter (no program for lt: it does not). */
static int filter_pass(Scanner *S, uint32_t lt, const uint8_t *d, int64_t len, uint32_t orig_len)
{
    if (lt == 239) { /* NFLOG: the program is raw IP's, run on the logged packet */
        int64_t off = nflog_payload(d, len);
        if (off < 0)
            return 0;
        d += off;
        len -= off;
        orig_len = orig_len > off ? orig_len - (uint32_t)off : 0;
    }
    for (uint32_t j = 0; j < S->n_filters; j++)
        if (S->filters[j].linktype == lt)
            return bpf_run(&S->filters[j], d, len, orig_len) != 0;
    return 0;
}

static void filters_free(Scanner *S)
{
    for (uint32_t j = 0; j < S->n_filters; j++)
        free(S->filters[j].insns);
    free(S->filters);
    S->filters = NULL;
    S->n_filters = 0;
}

/* -- flow table (treason.model.FlowTable) --------------------------------------------------- */

/* The flow key's endpoints, the lower (address, port) first: one key for both directions. */
static inline void flow_ends(const Seg *g, const uint8_t **lo, uint16_t *lo_port,
                             const uint8_t **hi, uint16_t *hi_port)
{
    int c0 = addr_cmp(g->src, g->dst);
    if (c0 < 0 || (c0 == 0 && g->sport <= g->dport)) {
        *lo = g->src, *lo_port = g->sport, *hi = g->dst, *hi_port = g->dport;
    } else {
        *lo = g->dst, *lo_port = g->dport, *hi = g->src, *hi_port = g->sport;
    }
}

static inline uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static uint32_t key_hash(uint64_t seed, const uint8_t *lo, uint16_t lo_port, const uint8_t *hi,
                         uint16_t hi_port, int v6, uint32_t nvlan, const uint16_t *vlan)
{
    uint64_t h = seed ^ ((uint64_t)lo_port << 32) ^ ((uint64_t)hi_port << 16) ^ (uint64_t)v6 ^
                 ((uint64_t)nvlan << 48);
    h = mix64(h ^ ld64(lo));
    h = mix64(h ^ ld64(hi));
    if (v6) {
        h = mix64(h ^ ld64(lo + 8));
        h = mix64(h ^ ld64(hi + 8));
    }
    for (uint32_t i = 0; i < nvlan; i++)
        h = mix64(h ^ (vlan[i] + 0x9e3779b97f4a7c15ULL * (i + 1)));
    return (uint32_t)(h ^ (h >> 32));
}

static inline int key_same(Conn *c, const uint8_t *lo, uint16_t lo_port, const uint8_t *hi,
                           uint16_t hi_port, int v6, uint32_t nvlan, const uint16_t *vlan)
{
    return c->lo_port == lo_port && c->hi_port == hi_port && c->v6 == v6 && c->nvlan == nvlan &&
           addr_eq(c->lo_addr, lo) && addr_eq(c->hi_addr, hi) &&
           (nvlan == 0 || memcmp(conn_vlan(c), vlan, nvlan * sizeof(uint16_t)) == 0);
}

static inline int key_equal(Conn *c, uint32_t hash, const uint8_t *lo, uint16_t lo_port,
                            const uint8_t *hi, uint16_t hi_port, int v6, uint32_t nvlan,
                            const uint16_t *vlan)
{
    return c->hash == hash && key_same(c, lo, lo_port, hi, hi_port, v6, nvlan, vlan);
}

static void lru_unlink(Scanner *S, uint32_t i)
{
    Conn *c = &S->conns[i];
    if (c->prev != NIL)
        S->conns[c->prev].next = c->next;
    else
        S->lru_head = c->next;
    if (c->next != NIL)
        S->conns[c->next].prev = c->prev;
    else
        S->lru_tail = c->prev;
}

static void lru_append(Scanner *S, uint32_t i)
{
    Conn *c = &S->conns[i];
    c->prev = S->lru_tail;
    c->next = NIL;
    if (S->lru_tail != NIL)
        S->conns[S->lru_tail].next = i;
    else
        S->lru_head = i;
    S->lru_tail = i;
}

#define SLOT_ALT 0x80000000u
#define SLOT_PEND 0x40000000u
#define SLOT_IDX 0x3FFFFFFFu

static inline uint32_t slot_hash(Scanner *S, uint32_t v)
{
    Conn *c = &S->conns[(v & SLOT_IDX) - 1];
    return v & SLOT_ALT ? c->alt->hash : v & SLOT_PEND ? c->pend_hash : c->hash;
}

static int slots_grow(Scanner *S)
{
    uint32_t n = S->n_slots ? S->n_slots * 2 : 1024;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots)
        return -1;
    for (uint32_t j = 0; j < S->n_slots; j++) {
        uint32_t v = S->slots[j];
        if (!v)
            continue;
        uint32_t k = slot_hash(S, v) & (n - 1);
        while (slots[k])
            k = (k + 1) & (n - 1);
        slots[k] = v;
    }
    free(S->slots);
    S->slots = slots;
    S->n_slots = n;
    return 0;
}

/* Put v in the table (grown first when half full). */
static int slots_insert(Scanner *S, uint32_t v, uint32_t hash)
{
    if ((uint64_t)(S->n_entries + 1) * 2 > S->n_slots && slots_grow(S) < 0)
        return -1;
    uint32_t mask = S->n_slots - 1, j = hash & mask;
    while (S->slots[j])
        j = (j + 1) & mask;
    S->slots[j] = v;
    S->n_entries++;
    return 0;
}

static void slots_remove(Scanner *S, uint32_t v, uint32_t hash)
{
    uint32_t mask = S->n_slots - 1;
    uint32_t j = hash & mask;
    while (S->slots[j] != v)
        j = (j + 1) & mask;
    S->n_entries--;
    /* backward-shift deletion keeps every probe chain unbroken without tombstones */
    uint32_t k = j;
    for (;;) {
        S->slots[j] = 0;
        for (;;) {
            k = (k + 1) & mask;
            if (!S->slots[k])
                return;
            uint32_t home = slot_hash(S, S->slots[k]) & mask;
            /* move slots[k] into j unless its home lies cyclically in (j, k] */
            if (j <= k ? (home <= j || home > k) : (home <= j && home > k))
                break;
        }
        S->slots[j] = S->slots[k];
        j = k;
    }
}

/* key_equal for the alias key of c */
static inline int alt_equal(Conn *c, uint32_t hash, const uint8_t *lo, uint16_t lo_port,
                            const uint8_t *hi, uint16_t hi_port, int v6, uint32_t nvlan,
                            const uint16_t *vlan)
{
    const AltKey *k = c->alt;
    return k && k->hash == hash && c->lo_port == lo_port && c->hi_port == hi_port &&
           c->v6 == v6 && k->n == nvlan && addr_eq(c->lo_addr, lo) && addr_eq(c->hi_addr, hi) &&
           (nvlan == 0 || memcmp(k->path, vlan, nvlan * sizeof(uint16_t)) == 0);
}

/* Connection.answers_syn: g is the SYN-ACK to c's SYN, its client still in SYN-SENT. */
static int answers_syn(Conn *c, const Seg *g)
{
    if (!c->syn_seen || c->synack_seen || c->established || !c->client)
        return 0;
    Side *cl = side_of(c, c->client);
    int a_sends = c->a_is_lo ? (addr_eq(g->src, c->lo_addr) && g->sport == c->lo_port)
                             : (addr_eq(g->src, c->hi_addr) && g->sport == c->hi_port);
    return (cl->has & H_ISN) && (a_sends ? 1 : 2) != c->client && g->ack == cl->isn + 1;
}

/* The hash of a 4-tuple alone, for the SYN-SENT entries. */
static inline uint32_t pend_hash(Scanner *S, const uint8_t *lo, uint16_t lo_port,
                                 const uint8_t *hi, uint16_t hi_port, int v6)
{
    return key_hash(S->hash_seed ^ 0x5bd1e9955bd1e995ULL, lo, lo_port, hi, hi_port, v6, 0, NULL);
}

/* FlowTable._pair: the connection on another path whose SYN g answers (latest SYN); NIL. */
static uint32_t pair(Scanner *S, const Seg *g, uint32_t hash, const uint8_t *lo,
                     uint16_t lo_port, const uint8_t *hi, uint16_t hi_port)
{
    uint32_t h4 = pend_hash(S, lo, lo_port, hi, hi_port, g->v6);
    uint32_t mask = S->n_slots - 1, found = NIL;
    for (uint32_t j = h4 & mask; S->slots[j]; j = (j + 1) & mask) {
        uint32_t v = S->slots[j];
        if (!(v & SLOT_PEND))
            continue;
        uint32_t i = (v & SLOT_IDX) - 1;
        Conn *c = &S->conns[i];
        if (c->pend_hash != h4 || c->alt || c->lo_port != lo_port || c->hi_port != hi_port ||
            c->v6 != g->v6 || !addr_eq(c->lo_addr, lo) || !addr_eq(c->hi_addr, hi) ||
            !answers_syn(c, g))
            continue;
        if (found == NIL || c->syn_frame > S->conns[found].syn_frame)
            found = i;
    }
    if (found == NIL)
        return NIL;
    Conn *c = &S->conns[found];
    AltKey *k = malloc(sizeof *k + g->nvlan * sizeof(uint16_t));
    if (!k)
        return NIL - 1;
    k->hash = hash;
    k->n = g->nvlan;
    memcpy(k->path, g->vlan, g->nvlan * sizeof(uint16_t));
    c->alt = k;
    if (slots_insert(S, (found + 1) | SLOT_ALT, hash) < 0)
        return NIL - 1;
    return found;
}

/* FlowTable._drop: a flow that ends has nothing more in flight. */
static inline void conn_drop(Scanner *S, Conn *c)
{
    unhold(S, &c->a);
    unhold(S, &c->b);
}

static void conn_evict(Scanner *S, uint32_t idx)
{
    Conn *c = &S->conns[idx];
    conn_drop(S, c);
    if (S->sers && series_end(S, idx) < 0)
        S->py_error = 1;
    slots_remove(S, idx + 1, c->hash);
    if (c->alt) {
        slots_remove(S, (idx + 1) | SLOT_ALT, c->alt->hash);
        free(c->alt);
        c->alt = NULL;
    }
    if (c->pending) {
        slots_remove(S, (idx + 1) | SLOT_PEND, c->pend_hash);
        c->pending = 0;
    }
    lru_unlink(S, idx);
    free(c->a.unk);
    free(c->b.unk);
    c->a.unk = c->b.unk = NULL;
    if (c->nvlan > VLAN_INLINE)
        free(c->vlan_ext);
    c->vlan_ext = NULL;
    c->nvlan = 0;
    c->next = S->free_head;
    S->free_head = idx;
    S->live--;
}

/* FlowTable._expire: flows idle longer than the timeout on the table's clock, oldest first. */
static void expire(Scanner *S)
{
    i128 limit = S->now - S->idle;
    while (S->lru_head != NIL && S->conns[S->lru_head].last_active < limit) {
        conn_evict(S, S->lru_head);
        S->evicted_idle++;
    }
}

static int table_process(Scanner *S, const Seg *g)
{
    if (g->clock > S->now)
        S->now = g->clock;
    if (S->q_head != S->q_tail)
        close_due(S, S->now);
    expire(S);
    const uint8_t *lo, *hi;
    uint16_t lo_port, hi_port;
    flow_ends(g, &lo, &lo_port, &hi, &hi_port);
    uint32_t hash = 0;
    uint32_t idx = NIL;
    /* most segments belong to the flow of the one before: the most recent entry */
    if (S->lru_tail != NIL && key_same(&S->conns[S->lru_tail], lo, lo_port, hi, hi_port, g->v6,
                                       g->nvlan, g->vlan)) {
        idx = S->lru_tail;
    } else if (S->n_slots) {
        hash = key_hash(S->hash_seed, lo, lo_port, hi, hi_port, g->v6, g->nvlan, g->vlan);
        uint32_t mask = S->n_slots - 1;
        for (uint32_t j = hash & mask; S->slots[j]; j = (j + 1) & mask) {
            uint32_t v = S->slots[j];
            if (v & SLOT_PEND)
                continue;
            uint32_t i = (v & SLOT_IDX) - 1;
            if (v & SLOT_ALT ? alt_equal(&S->conns[i], hash, lo, lo_port, hi, hi_port, g->v6,
                                         g->nvlan, g->vlan)
                             : key_equal(&S->conns[i], hash, lo, lo_port, hi, hi_port, g->v6,
                                         g->nvlan, g->vlan)) {
                idx = i;
                break;
            }
        }
        if (idx == NIL && (g->flags & (F_SYN | F_ACK)) == (F_SYN | F_ACK)) {
            idx = pair(S, g, hash, lo, lo_port, hi, hi_port);
            if (idx == NIL - 1)
                goto nomem;
        }
    }
    Conn *c;
    if (idx == NIL) {
        if (!S->n_slots)
            hash = key_hash(S->hash_seed, lo, lo_port, hi, hi_port, g->v6, g->nvlan, g->vlan);
        if (S->live >= S->max_flows) {
            conn_evict(S, S->lru_head);
            S->evicted_cap++;
        }
        if (S->free_head != NIL) {
            idx = S->free_head;
            S->free_head = S->conns[idx].next;
        } else {
            if (S->n_conns == S->cap_conns) {
                uint64_t cap = S->cap_conns ? (uint64_t)S->cap_conns * 2 : 1024;
                if (cap > S->max_flows)
                    cap = S->max_flows;
                Conn *p = realloc(S->conns, cap * sizeof *p);
                if (!p)
                    goto nomem;
                S->conns = p;
                S->cap_conns = (uint32_t)cap;
                if (S->series_on && series_fit(S, S->cap_conns) < 0)
                    goto nomem;
            }
            if (S->n_conns >= SLOT_IDX - 1)
                goto nomem;
            idx = S->n_conns++;
        }
        c = &S->conns[idx];
        memset(c, 0, sizeof *c);
        memcpy(c->lo_addr, lo, 16);
        memcpy(c->hi_addr, hi, 16);
        c->lo_port = lo_port;
        c->hi_port = hi_port;
        c->v6 = (uint8_t)g->v6;
        c->nvlan = g->nvlan;
        if (g->nvlan > VLAN_INLINE) {
            c->vlan_ext = malloc(g->nvlan * sizeof(uint16_t));
            if (!c->vlan_ext)
                goto nomem;
            memcpy(c->vlan_ext, g->vlan, g->nvlan * sizeof(uint16_t));
        } else if (g->nvlan) {
            memcpy(c->vlan_in, g->vlan, g->nvlan * sizeof(uint16_t));
        }
        c->hash = hash;
        if (slots_insert(S, idx + 1, hash) < 0)
            goto nomem;
        S->live++;
        conn_reset_state(c, g);
        S->flows++;
    } else {
        c = &S->conns[idx];
        lru_unlink(S, idx);
        if ((g->flags & (F_SYN | F_ACK)) == F_SYN && reusable_by(c, g)) {
            conn_drop(S, c);
            conn_reset_state(c, g);
            S->flows++;
        }
    }
    int was_seen = c->syn_seen && c->synack_seen;
    uint64_t q_before = S->q_tail;
    conn_process(S, c, g);
    if (S->marks && mark_segment(S, c, q_before) < 0)
        return -1;
    if (S->series_on && series_add(S, idx, g, S->q_tail != q_before) < 0)
        goto nomem;
    c->last_active = S->now;
    if (c->syn_seen && c->synack_seen && !was_seen)
        S->handshakes++;
    if (c->pending && (c->synack_seen || c->established)) {
        /* out of SYN-SENT: never a candidate again (FlowTable._pair skips it) */
        slots_remove(S, (idx + 1) | SLOT_PEND, c->pend_hash);
        c->pending = 0;
    } else if (!c->pending && c->syn_frame == g->frame && c->syn_seen && !c->synack_seen) {
        /* FlowTable._pend: the client entered SYN-SENT */
        c->pend_hash = pend_hash(S, lo, lo_port, hi, hi_port, g->v6);
        if (slots_insert(S, (idx + 1) | SLOT_PEND, c->pend_hash) < 0)
            goto nomem;
        c->pending = 1;
    }
    lru_append(S, idx);
    if (S->q_head != S->q_tail && !ev_at(S, S->q_head)->open)
        release(S);
    return S->py_error ? -1 : 0;
nomem:
    S->py_error = 1;
    PyErr_NoMemory();
    return -1;
}

/* -- one frame ------------------------------------------------------------------------------ */

static int split_frame(Scanner *S, Seg *g, uint32_t lt, const uint8_t *d, int64_t len,
                       uint32_t orig_len);

static inline int frame(Scanner *S, i128 ts, uint32_t lt, const uint8_t *d, int64_t len,
                        uint32_t orig_len)
{
    Seg g;
    S->frames++;
    g.frame = S->base + ++S->number;
    g.ts = g.clock = ts;
    if (S->split)
        return split_frame(S, &g, lt, d, len, orig_len);
    if (S->filters && !filter_pass(S, lt, d, len, orig_len)) {
        S->filtered++;
        if (S->marks) {
            Py_INCREF(Py_None);
            return mark_append(S, Py_None);
        }
        return 0;
    }
    int why = decode(lt, d, len, orig_len, &g);
    if (S->py_error)
        return -1;
    if (why >= 0) {
        S->skipped[why]++;
        if (S->marks) {
            Py_INCREF(Py_None);
            return mark_append(S, Py_None);
        }
        return 0;
    }
    S->segments++;
    return table_process(S, &g);
}


/* -- split mode (treason.sets.records) ------------------------------------------------------ */

/*
 * A decoded segment as a record of its own, so that a capture can be decoded once and its
 * segments analysed elsewhere (another process, another machine) in any grouping by flow. Native
 * byte order, no padding (Python reads it with struct format SEGREC_FORMAT); the nvlan words of
 * the flow key's tag path (uint16: VLAN ids, tunnel entries) follow, then for each enclosing IP
 * header (opts >> 4 of them) its v6 byte, source and destination (16 bytes each), and the
 * record is padded to a multiple of 8 bytes.
 */
typedef struct {
    uint32_t size; /* bytes of the whole record */
    uint16_t nvlan;
    uint8_t v6, flags;
    uint64_t frame; /* frame number, base included */
    uint64_t ts[2]; /* capture time (ns), low and high halves of 128 bits */
    uint64_t clock[2]; /* latest segment time of the capture so far, likewise */
    int64_t payload_len;
    uint32_t seq, ack, tsval;
    uint16_t sport, dport, win, ip_id, checksum;
    uint8_t ws, opts; /* opts bit 0: window-scale option; bit 1: TSval; bits 4-7: outer headers */
    uint8_t src[16], dst[16];
} SegRec;

#define SEGREC_FORMAT "=IHBBQQQQQqIIIHHHHHBB16s16s"
#define OUTER_BYTES 33 /* per enclosing IP header: v6, source, destination */
_Static_assert(sizeof(SegRec) == 112, "SegRec must have no padding (SEGREC_FORMAT)");

static int bucket_put(Scanner *S, uint32_t b, const Seg *g)
{
    size_t size = (sizeof(SegRec) + g->nvlan * sizeof(uint16_t) + g->nouter * OUTER_BYTES + 7) &
                  ~(size_t)7;
    if (S->bk_len[b] + size > S->bk_cap[b]) {
        size_t cap = S->bk_cap[b] ? S->bk_cap[b] * 2 : 65536;
        while (cap < S->bk_len[b] + size)
            cap *= 2;
        uint8_t *p = realloc(S->bk[b], cap);
        if (!p)
            return -1;
        S->bk[b] = p;
        S->bk_cap[b] = cap;
    }
    SegRec r;
    memset(&r, 0, sizeof r);
    r.size = (uint32_t)size;
    r.nvlan = (uint16_t)g->nvlan;
    r.v6 = (uint8_t)g->v6;
    r.flags = g->flags;
    r.frame = g->frame;
    r.ts[0] = (uint64_t)(u128)g->ts;
    r.ts[1] = (uint64_t)((u128)g->ts >> 64);
    r.clock[0] = (uint64_t)(u128)g->clock;
    r.clock[1] = (uint64_t)((u128)g->clock >> 64);
    r.payload_len = g->payload_len;
    r.seq = g->seq;
    r.ack = g->ack;
    r.tsval = g->has_tsval ? g->tsval : 0;
    r.sport = g->sport;
    r.dport = g->dport;
    r.win = g->win;
    r.ip_id = g->ip_id;
    r.checksum = g->checksum;
    r.ws = g->ws >= 0 ? (uint8_t)g->ws : 0;
    r.opts = (uint8_t)((g->ws >= 0 ? 1 : 0) | (g->has_tsval ? 2 : 0) | g->nouter << 4);
    memcpy(r.src, g->src, 16);
    memcpy(r.dst, g->dst, 16);
    uint8_t *at = S->bk[b] + S->bk_len[b];
    memset(at, 0, size);
    memcpy(at, &r, sizeof r);
    if (g->nvlan)
        memcpy(at + sizeof r, g->vlan, g->nvlan * sizeof(uint16_t));
    uint8_t *o = at + sizeof r + g->nvlan * sizeof(uint16_t);
    for (uint32_t i = 0; i < g->nouter; i++, o += OUTER_BYTES) {
        size_t alen = g->outer_v6[i] ? 16 : 4; /* the rest stays zero: records are exact */
        o[0] = g->outer_v6[i];
        memcpy(o + 1, g->outer[i][0], alen);
        memcpy(o + 17, g->outer[i][1], alen);
    }
    S->bk_len[b] += size;
    return 0;
}

/*
 * One frame in split mode: counted (frames, skipped, segments) here and only here, its time
 * added to the capture's span, and its segment written to the bucket of its flow. The bucket is
 * a hash of the flow key that is the same in both directions and in every process (seed 0).
 */
static int split_frame(Scanner *S, Seg *g, uint32_t lt, const uint8_t *d, int64_t len,
                       uint32_t orig_len)
{
    if (!S->have_first) {
        S->have_first = 1;
        S->first_ts = S->max_ts = g->ts;
        S->first_lt = lt;
    } else if (g->ts > S->max_ts) {
        S->max_ts = g->ts;
    }
    uint32_t n = (uint32_t)(S->split - 1);
    if (!n)
        return 0;
    if (S->filters && !filter_pass(S, lt, d, len, orig_len)) {
        S->filtered++;
        return 0;
    }
    int why = decode(lt, d, len, orig_len, g);
    if (S->py_error)
        return -1;
    if (why >= 0) {
        S->skipped[why]++;
        return 0;
    }
    S->segments++;
    if (g->ts > S->now)
        S->now = g->ts;
    g->clock = S->now;
    const uint8_t *lo, *hi;
    uint16_t lo_port, hi_port;
    flow_ends(g, &lo, &lo_port, &hi, &hi_port);
    /* Endpoints only, no tag path: a connection whose directions carry different tags
       (treason.model.FlowTable's aliases) stays in one bucket. */
    uint32_t h = key_hash(0, lo, lo_port, hi, hi_port, g->v6, 0, NULL);
    if (bucket_put(S, h % n, g) < 0) {
        S->py_error = 1;
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Analyse segment records (split mode's output) as if their frames were fed here. */
static int feed_segrecs(Scanner *S, const uint8_t *buf, Py_ssize_t len, i128 base_clock)
{
    Py_ssize_t pos = 0;
    while (len - pos >= (Py_ssize_t)sizeof(SegRec)) {
        SegRec r;
        memcpy(&r, buf + pos, sizeof r);
        uint32_t nouter = (uint32_t)r.opts >> 4;
        if (r.size < sizeof r || (Py_ssize_t)r.size > len - pos || r.nvlan > PATH_WORDS ||
            nouter > MAX_TUNNELS + 1 ||
            r.size < sizeof r + r.nvlan * sizeof(uint16_t) + nouter * OUTER_BYTES) {
            PyErr_SetString(PyExc_ValueError, "malformed segment record");
            S->py_error = 1;
            return -1;
        }
        Seg g;
        g.frame = r.frame;
        g.ts = (i128)(((u128)r.ts[1] << 64) | r.ts[0]);
        g.clock = (i128)(((u128)r.clock[1] << 64) | r.clock[0]);
        if (base_clock > g.clock)
            g.clock = base_clock;
        g.v6 = r.v6;
        memcpy(g.src, r.src, 16);
        memcpy(g.dst, r.dst, 16);
        g.sport = r.sport;
        g.dport = r.dport;
        g.seq = r.seq;
        g.ack = r.ack;
        g.flags = r.flags;
        g.win = r.win;
        g.payload_len = r.payload_len;
        g.ws = (r.opts & 1) ? r.ws : -1;
        g.nvlan = r.nvlan;
        memcpy(g.path, buf + pos + sizeof r, r.nvlan * sizeof(uint16_t));
        g.vlan = g.path;
        g.tags = g.tunnels = 0; /* the decoder's depth counts: not read past decoding */
        g.nouter = nouter;
        const uint8_t *o = buf + pos + sizeof r + r.nvlan * sizeof(uint16_t);
        for (uint32_t i = 0; i < nouter; i++, o += OUTER_BYTES) {
            g.outer_v6[i] = o[0];
            memcpy(g.outer[i][0], o + 1, 16);
            memcpy(g.outer[i][1], o + 17, 16);
        }
        g.ip_id = r.ip_id;
        g.checksum = r.checksum;
        g.has_tsval = (r.opts & 2) != 0;
        g.tsval = r.tsval;
        if (table_process(S, &g) < 0)
            return -1;
        pos += r.size;
    }
    if (pos != len) {
        PyErr_SetString(PyExc_ValueError, "segment records end inside a record");
        S->py_error = 1;
        return -1;
    }
    return 0;
}

/* -- pcap (treason.readers.pcap) ------------------------------------------------------------ */

/* The next frame is longer than its snap length: read whole and counted (readers.LongRecords). */
static void over_snaplen(Scanner *S, uint32_t caplen, uint32_t snaplen)
{
    S->over_snaplen++;
    if (!S->long_frame) {
        S->long_frame = S->number + 1;
        S->long_len = caplen;
        S->long_snap = snaplen;
    }
}

/* Consume records from buf; returns bytes consumed, sets *need to the bytes the next one needs. */
static Py_ssize_t feed_pcap(Scanner *S, const uint8_t *buf, Py_ssize_t len, int eof,
                            Py_ssize_t *need)
{
    Py_ssize_t pos = 0;
    *need = 0;
    if (!S->started) {
        if (len < 24) {
            if (eof)
                set_error(S, 1, 0, "truncated pcap file header (%zd of 24 bytes)", len);
            *need = 24;
            return 0;
        }
        uint32_t m = le32(buf);
        if (m == 0xA1B2C3D4 || m == 0xA1B23C4D || m == 0xA1B2CD34) {
            S->big = 0;
        } else {
            S->big = 1;
            m = be32(buf);
        }
        S->ns_per_unit = m == 0xA1B23C4D ? 1 : 1000;
        S->rec_len = m == 0xA1B2CD34 ? 24 : 16;
        S->snaplen = rd32(buf + 16, S->big);
        S->linktype = rd32(buf + 20, S->big) & 0xFFFF;
        S->started = 1;
        pos = 24;
    }
    const uint32_t rec_len = S->rec_len;
    const int big = S->big;
    while (1) {
        Py_ssize_t avail = len - pos;
        if (avail < (Py_ssize_t)rec_len) {
            if (eof && avail)
                set_error(S, 2, (int64_t)(S->offset + pos),
                          "truncated record header (%zd of %u bytes)", avail, rec_len);
            *need = rec_len;
            break;
        }
        const uint8_t *h = buf + pos;
        uint32_t sec = rd32(h, big), frac = rd32(h + 4, big), incl = rd32(h + 8, big),
                 orig = rd32(h + 12, big);
        if (incl > MAX_RECORD) {
            set_error(S, 1, (int64_t)(S->offset + pos),
                      "bad record header: %u-byte record, more than the 256 KiB limit (%u)", incl,
                      (unsigned)MAX_RECORD);
            break;
        }
        if (avail < (Py_ssize_t)(rec_len + incl)) {
            if (eof)
                set_error(S, 2, (int64_t)(S->offset + pos), "truncated record (%zd of %u bytes)",
                          avail, rec_len + incl);
            *need = rec_len + incl;
            break;
        }
        i128 ts = (i128)sec * 1000000000 + (i128)frac * (i128)S->ns_per_unit;
        if (S->snaplen && incl > S->snaplen)
            over_snaplen(S, incl, S->snaplen);
        if (frame(S, ts, S->linktype, h + rec_len, incl, orig) < 0) {
            pos += rec_len + incl;
            break;
        }
        pos += rec_len + incl;
    }
    return pos;
}

/* -- pcapng (treason.readers.pcapng) -------------------------------------------------------- */

static void parse_idb(Iface *f, const uint8_t *body, Py_ssize_t blen, int big)
{
    f->linktype = rd16(body, big);
    f->snaplen = rd32(body + 4, big);
    f->ns_mul = 1000;
    f->div_kind = 0;
    f->div10 = 1;
    f->div_shift = 0;
    f->offset_ns = 0;
    Py_ssize_t pos = 8, end = blen;
    while (pos + 4 <= end) {
        uint16_t code = rd16(body + pos, big), olen = rd16(body + pos + 2, big);
        if (code == 0)
            return;
        pos += 4;
        if (pos + olen > end)
            return;
        const uint8_t *v = body + pos;
        if (code == 9 && olen >= 1) {
            int exp = v[0] & 0x7F;
            if (v[0] & 0x80) {
                f->ns_mul = 1000000000;
                f->div_kind = 1;
                f->div_shift = exp;
            } else if (exp <= 9) {
                uint64_t m = 1;
                for (int i = 0; i < 9 - exp; i++)
                    m *= 10;
                f->ns_mul = m;
                f->div_kind = 0;
                f->div10 = 1;
            } else if (exp - 9 >= 20) {
                f->ns_mul = 1;
                f->div_kind = 2; /* 10**20 > 2**64 > any timestamp */
            } else {
                uint64_t d = 1;
                for (int i = 0; i < exp - 9; i++)
                    d *= 10;
                f->ns_mul = 1;
                f->div_kind = 0;
                f->div10 = d;
            }
        } else if (code == 14 && olen >= 8) {
            uint64_t q = big ? ((uint64_t)be32(v) << 32 | be32(v + 4))
                             : ((uint64_t)le32(v + 4) << 32 | le32(v));
            f->offset_ns = (i128)(int64_t)q * 1000000000;
        }
        pos += (olen + 3) & ~3;
    }
}

/* readers.pcapng: interfaces per section, and frame times within years 1-9999 UTC. */
#define MAX_INTERFACES 65536u
#define MIN_TS_NS ((i128)-62135596800LL * 1000000000)
#define MAX_TS_NS ((i128)253402300799LL * 1000000000)

static inline i128 iface_ts(const Iface *f, uint64_t ts)
{
    u128 t = (u128)ts * f->ns_mul;
    if (f->div_kind == 0)
        t /= f->div10;
    else if (f->div_kind == 1)
        t >>= f->div_shift;
    else
        t = 0;
    return (i128)t + f->offset_ns;
}

static int check_iface(Scanner *S, uint32_t if_id, int64_t start)
{
    if (if_id < S->n_ifaces)
        return 0;
    set_error(S, 1, start, "packet on interface %u, but the section describes %u interface%s",
              if_id, S->n_ifaces, S->n_ifaces == 1 ? "" : "s");
    return -1;
}

static int check_caplen(Scanner *S, uint64_t caplen, int64_t start)
{
    if (caplen > MAX_RECORD) {
        set_error(S, 1, start, "bad record: %llu-byte packet, more than the 256 KiB limit",
                  (unsigned long long)caplen);
        return -1;
    }
    return 0;
}

static uint32_t min_len(uint32_t btype)
{
    switch (btype) {
    case 0x0A0D0D0A:
        return 28;
    case 1:
        return 20;
    case 2:
        return 32;
    case 3:
        return 16;
    case 6:
        return 32;
    default:
        return 12;
    }
}

static Py_ssize_t feed_pcapng(Scanner *S, const uint8_t *buf, Py_ssize_t len, int eof,
                              Py_ssize_t *need)
{
    Py_ssize_t pos = 0;
    *need = 0;
    while (1) {
        Py_ssize_t avail = len - pos;
        int64_t start = (int64_t)(S->offset + pos);
        if (avail < 12) {
            if (eof && avail) {
                if (S->sections)
                    set_error(S, 2, start, "truncated record (%zd bytes of a block header)", avail);
                else /* never became a capture: fatal, like a short pcap file header */
                    set_error(S, 1, start,
                              "truncated pcapng section header block (%zd bytes of a block header)",
                              avail);
            }
            *need = 12;
            break;
        }
        const uint8_t *b = buf + pos;
        if (b[0] == 0x0A && b[1] == 0x0D && b[2] == 0x0D && b[3] == 0x0A) {
            if (b[8] == 0x4D && b[9] == 0x3C && b[10] == 0x2B && b[11] == 0x1A)
                S->big = 0;
            else if (b[8] == 0x1A && b[9] == 0x2B && b[10] == 0x3C && b[11] == 0x4D)
                S->big = 1;
            else {
                set_error(S, 1, start + 8, "bad pcapng byte-order magic");
                break;
            }
        }
        const int big = S->big;
        uint32_t btype = rd32(b, big), blen = rd32(b + 4, big);
        if (blen < min_len(btype) || blen % 4 || blen > MAX_BLOCK) {
            set_error(S, 1, start, "bad pcapng block length %u", blen);
            break;
        }
        if (avail < (Py_ssize_t)blen) {
            if (eof && S->sections)
                set_error(S, 2, start, "truncated record (%zd of %u bytes)", avail, blen);
            else if (eof)
                set_error(S, 1, start, "truncated pcapng section header block (%zd of %u bytes)",
                          avail, blen);
            *need = blen;
            break;
        }
        uint32_t trailer = rd32(b + blen - 4, big);
        if (trailer != blen) {
            set_error(S, 1, start, "bad pcapng block length %u (trailer says %u)", blen, trailer);
            break;
        }
        const uint8_t *body = b + 8;
        Py_ssize_t body_len = (Py_ssize_t)blen - 12;
        pos += blen;
        if (btype == 6 || btype == 2) {
            uint32_t if_id, ts_high, ts_low, caplen, orig_len;
            if (btype == 6) {
                if_id = rd32(body, big);
                ts_high = rd32(body + 4, big);
                ts_low = rd32(body + 8, big);
                caplen = rd32(body + 12, big);
                orig_len = rd32(body + 16, big);
            } else {
                if_id = rd16(body, big);
                ts_high = rd32(body + 4, big);
                ts_low = rd32(body + 8, big);
                caplen = rd32(body + 12, big);
                orig_len = rd32(body + 16, big);
            }
            if (20 + (uint64_t)caplen > (uint64_t)body_len) {
                set_error(S, 1, start, "bad pcapng block length %u for a %u-byte packet", blen,
                          caplen);
                pos -= blen;
                break;
            }
            if (check_iface(S, if_id, start) < 0 ||
                check_caplen(S, caplen, start) < 0) {
                pos -= blen;
                break;
            }
            const Iface *f = &S->ifaces[if_id];
            i128 ts = iface_ts(f, ((uint64_t)ts_high << 32) | ts_low);
            if (ts < MIN_TS_NS || ts > MAX_TS_NS) {
                set_error(S, 1, start, "timestamp out of range (outside years 1-9999)");
                pos -= blen;
                break;
            }
            if (f->snaplen && caplen > f->snaplen)
                over_snaplen(S, caplen, f->snaplen);
            if (frame(S, ts, f->linktype, body + 20, caplen, orig_len) < 0)
                break;
        } else if (btype == 3) {
            if (check_iface(S, 0, start) < 0) {
                pos -= blen;
                break;
            }
            const Iface *f = &S->ifaces[0];
            uint32_t orig_len = rd32(body, big);
            uint64_t room = (uint64_t)body_len - 4;
            uint64_t caplen = orig_len < room ? orig_len : room;
            if (f->snaplen && caplen > f->snaplen)
                caplen = f->snaplen;
            if (check_caplen(S, caplen, start) < 0) {
                pos -= blen;
                break;
            }
            if (frame(S, 0, f->linktype, body + 4, (int64_t)caplen, orig_len) < 0)
                break;
        } else if (btype == 0x0A0D0D0A) {
            uint16_t major = rd16(body + 4, big);
            if (major != 1) {
                set_error(S, 1, start, "unsupported pcapng version %u", major);
                pos -= blen;
                break;
            }
            S->n_ifaces = 0;
            S->sections++;
        } else if (btype == 1) {
            if (S->sections == 0) {
                set_error(S, 1, start, "missing pcapng section header block");
                pos -= blen;
                break;
            }
            if (S->n_ifaces == MAX_INTERFACES) {
                set_error(S, 1, start, "more than %u interfaces in one pcapng section",
                          (unsigned)MAX_INTERFACES);
                pos -= blen;
                break;
            }
            if (S->n_ifaces == S->cap_ifaces) {
                uint32_t cap = S->cap_ifaces ? S->cap_ifaces * 2 : 8;
                Iface *p = realloc(S->ifaces, cap * sizeof *p);
                if (!p) {
                    S->py_error = 1;
                    PyErr_NoMemory();
                    pos -= blen;
                    break;
                }
                S->ifaces = p;
                S->cap_ifaces = cap;
            }
            parse_idb(&S->ifaces[S->n_ifaces++], body, body_len, big);
        }
    }
    return pos;
}

/* -- Python type ---------------------------------------------------------------------------- */

static int Scanner_init(Scanner *S, PyObject *args, PyObject *kw)
{
    static char *names[] = {"max_flows", "idle_lo", "idle_hi", NULL};
    unsigned long long max_flows, idle_lo;
    long long idle_hi;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KKL", names, &max_flows, &idle_lo, &idle_hi))
        return -1;
    if (max_flows < 1 || max_flows > 0x7FFFFFFF) {
        PyErr_SetString(PyExc_ValueError, "max_flows must be between 1 and 2**31 - 1");
        return -1;
    }
    S->max_flows = (uint32_t)max_flows;
    S->idle = (i128)(((u128)(uint64_t)idle_hi << 64) | idle_lo);
    S->err_offset = -1;
    S->free_head = S->lru_head = S->lru_tail = NIL;
    /* Where entries sit never changes results (eviction follows recency, not slots). */
    if (getrandom(&S->hash_seed, sizeof S->hash_seed, 0) != sizeof S->hash_seed)
        S->hash_seed = (uint64_t)(uintptr_t)S ^ (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ULL;
    Py_XSETREF(S->events, PyList_New(0));
    return S->events ? 0 : -1;
}

static void Scanner_dealloc(Scanner *S)
{
    for (uint32_t i = 0; i < S->n_conns; i++) {
        free(S->conns[i].a.unk);
        free(S->conns[i].b.unk);
        if (S->conns[i].nvlan > VLAN_INLINE)
            free(S->conns[i].vlan_ext);
        free(S->conns[i].alt);
        if (S->sers)
            series_free(S->sers[i]);
    }
    free(S->sers);
    for (uint64_t id = S->q_head; id != S->q_tail; id++) {
        free(ev_at(S, id)->vlan_ext);
        Py_XDECREF(ev_at(S, id)->outer);
    }
    free(S->queue);
    free(S->conns);
    free(S->slots);
    free(S->ifaces);
    for (int b = 0; b < S->split - 1; b++)
        free(S->bk[b]);
    free(S->bk);
    free(S->bk_len);
    free(S->bk_cap);
    Py_XDECREF(S->events);
    Py_XDECREF(S->marks);
    Py_XDECREF(S->series_done);
    filters_free(S);
    Py_TYPE(S)->tp_free((PyObject *)S);
}

static PyObject *Scanner_feed(Scanner *S, PyObject *args)
{
    Py_buffer view;
    int eof;
    if (!PyArg_ParseTuple(args, "y*p", &view, &eof))
        return NULL;
    Py_ssize_t need = 0, used = 0;
    if (!S->fmt) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "feed() before begin()");
        return NULL;
    }
    if (!S->err_kind && !S->py_error) {
        if (S->fmt == 1)
            used = feed_pcap(S, view.buf, view.len, eof, &need);
        else
            used = feed_pcapng(S, view.buf, view.len, eof, &need);
        S->offset += (uint64_t)used;
    }
    PyBuffer_Release(&view);
    if (S->py_error)
        return NULL;
    return Py_BuildValue("nn", used, need);
}

/*
 * A new capture begins: its framing starts afresh (format, byte order, pcapng sections and
 * interfaces, the offset, frame numbers, the damage of the last one); the flow table, its clock
 * and the counters carry on, so flows continue across consecutive captures.
 */
static PyObject *Scanner_begin(Scanner *S, PyObject *args)
{
    long fmt;
    unsigned long long base = 0;
    if (!PyArg_ParseTuple(args, "l|K", &fmt, &base))
        return NULL;
    if (fmt != 1 && fmt != 2) {
        PyErr_SetString(PyExc_ValueError, "fmt must be 1 (pcap) or 2 (pcapng)");
        return NULL;
    }
    S->fmt = (int)fmt;
    S->number = 0;
    S->base = base;
    S->long_frame = 0;
    S->started = 0;
    S->big = 0;
    S->n_ifaces = 0;
    S->sections = 0;
    S->offset = 0;
    S->err_kind = 0;
    S->err_offset = -1;
    Py_RETURN_NONE;
}

static PyObject *Scanner_take_events(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = S->events;
    S->events = PyList_New(0);
    if (!S->events) {
        S->events = out;
        return NULL;
    }
    return out;
}

static PyObject *Scanner_flush(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    if (S->py_error)
        Py_RETURN_NONE; /* feed() already raised; nothing more is trustworthy */
    flush_all(S);
    if (S->py_error)
        return NULL;
    Py_RETURN_NONE;
}

/*
 * FlowTable.advance: the clock reaches now without a packet (a quiet live link). Open events due
 * by then are final; the table's clock (idle eviction, new deadlines) stays the latest packet's.
 */
static PyObject *Scanner_advance(Scanner *S, PyObject *arg)
{
    if (!PyLong_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "advance() takes an int (nanoseconds)");
        return NULL;
    }
    if (S->py_error)
        Py_RETURN_NONE; /* feed() already raised; nothing more is trustworthy */
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(arg, &overflow);
    if (small == -1 && PyErr_Occurred())
        return NULL;
    i128 now;
    if (!overflow) {
        now = (i128)small;
    } else {
        /* Beyond 64 bits (pcapng clocks can be): exact up to 127 bits, clamped past that,
           which closes every open event or none, as the unbounded comparison would. */
        PyObject *limit = PyLong_FromString("170141183460469231731687303715884105728", NULL, 10);
        if (!limit)
            return NULL;
        int beyond = overflow > 0 ? PyObject_RichCompareBool(arg, limit, Py_GE) : 0;
        if (overflow < 0) {
            PyObject *neg = PyNumber_Negative(limit);
            beyond = neg ? PyObject_RichCompareBool(arg, neg, Py_LT) : -1;
            Py_XDECREF(neg);
        }
        Py_DECREF(limit);
        if (beyond < 0)
            return NULL;
        if (beyond) {
            now = overflow > 0 ? (i128)(((u128)1 << 127) - 1) : -(i128)(((u128)1 << 127) - 1) - 1;
        } else {
            PyObject *mask = PyLong_FromUnsignedLongLong(~0ULL), *sh = PyLong_FromLong(64);
            PyObject *lo = NULL, *hi = NULL;
            if (mask && sh && (lo = PyNumber_And(arg, mask)))
                hi = PyNumber_Rshift(arg, sh);
            Py_XDECREF(mask);
            Py_XDECREF(sh);
            if (!hi) {
                Py_XDECREF(lo);
                return NULL;
            }
            unsigned long long ulo = PyLong_AsUnsignedLongLong(lo);
            long long shi = PyLong_AsLongLong(hi);
            Py_DECREF(lo);
            Py_DECREF(hi);
            if (PyErr_Occurred())
                return NULL;
            now = (i128)(((u128)(uint64_t)shi << 64) | ulo);
        }
    }
    close_due(S, now);
    if (!S->py_error)
        release(S);
    if (S->py_error)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Scanner_mark_flows(Scanner *S, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    if (on && !S->marks) {
        S->marks = PyList_New(0);
        if (!S->marks)
            return NULL;
    } else if (!on) {
        Py_CLEAR(S->marks);
    }
    Py_RETURN_NONE;
}

static PyObject *Scanner_take_marks(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    if (!S->marks)
        return PyList_New(0);
    PyObject *out = S->marks;
    S->marks = PyList_New(0);
    if (!S->marks) {
        S->marks = out;
        return NULL;
    }
    return out;
}

static PyObject *Scanner_series(Scanner *S, PyObject *args)
{
    unsigned long long cap;
    unsigned int before, after;
    if (!PyArg_ParseTuple(args, "KII", &cap, &before, &after))
        return NULL;
    if (cap < 1 || cap > (1u << 30)) {
        PyErr_SetString(PyExc_ValueError, "cap must be between 1 and 2**30");
        return NULL;
    }
    if (!S->series_done && !(S->series_done = PyList_New(0)))
        return NULL;
    if (series_fit(S, S->cap_conns ? S->cap_conns : 1) < 0)
        return PyErr_NoMemory();
    S->series_on = 1;
    S->s_cap = cap;
    S->s_before = before;
    S->s_after = after;
    Py_RETURN_NONE;
}

/* The series of every connection with an event: ended ones first, then the live ones, least
   recently active first. Taking ends the live ones' series too (SeriesSampler.finish): a
   connection that goes on starts a new one. */
static PyObject *Scanner_take_series(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    if (S->series_done) {
        Py_ssize_t n = PyList_GET_SIZE(S->series_done);
        for (Py_ssize_t j = 0; j < n; j++)
            if (PyList_Append(out, PyList_GET_ITEM(S->series_done, j)) < 0)
                goto fail;
        if (PyList_SetSlice(S->series_done, 0, n, NULL) < 0)
            goto fail;
    }
    for (uint32_t i = S->lru_head; i != NIL && S->sers; i = S->conns[i].next) {
        Series *r = S->sers[i];
        if (!r || !r->events)
            continue;
        PyObject *t = series_tuple(S, &S->conns[i], r);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
        series_free(r);
        S->sers[i] = NULL;
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* filter({linktype: [(code, jt, jf, k), ...]}): run these programs on every frame. */
static PyObject *Scanner_filter(Scanner *S, PyObject *arg)
{
    if (!PyDict_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "filter() takes a dict {linktype: instructions}");
        return NULL;
    }
    filters_free(S);
    Py_ssize_t n = PyDict_Size(arg), pos = 0;
    S->filters = calloc(n ? (size_t)n : 1, sizeof *S->filters);
    if (!S->filters)
        return PyErr_NoMemory();
    PyObject *key, *value;
    while (PyDict_Next(arg, &pos, &key, &value)) {
        BpfProg *f = &S->filters[S->n_filters];
        unsigned long lt = PyLong_AsUnsignedLong(key);
        if (PyErr_Occurred())
            goto fail;
        PyObject *seq = PySequence_Fast(value, "instructions must be a sequence");
        if (!seq)
            goto fail;
        Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
        if (m < 1 || m > BPF_MAX_INSNS) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "a program has 1 to 4096 instructions");
            goto fail;
        }
        f->insns = calloc((size_t)m, sizeof *f->insns);
        if (!f->insns) {
            Py_DECREF(seq);
            PyErr_NoMemory();
            goto fail;
        }
        f->linktype = (uint32_t)lt;
        S->n_filters++;
        for (Py_ssize_t j = 0; j < m; j++) {
            unsigned int code, jt, jf;
            unsigned long k;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, j), "IIIk", &code, &jt, &jf, &k)) {
                Py_DECREF(seq);
                goto fail;
            }
            f->insns[j] = (BpfInsn){(uint16_t)code, (uint8_t)jt, (uint8_t)jf, (uint32_t)k};
        }
        f->n = (uint32_t)m;
        Py_DECREF(seq);
    }
    Py_RETURN_NONE;
fail:
    filters_free(S);
    return NULL;
}

static PyObject *u64list(const uint64_t *v, int n)
{
    PyObject *l = PyList_New(n);
    if (!l)
        return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *x = PyLong_FromUnsignedLongLong(v[i]);
        if (!x) {
            Py_DECREF(l);
            return NULL;
        }
        PyList_SET_ITEM(l, i, x);
    }
    return l;
}

static PyObject *Scanner_counters(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{sKsKsKsNsNsKsKsKsKsNsIsK}", "frames", (unsigned long long)S->frames,
                         "segments", (unsigned long long)S->segments, "over_snaplen",
                         (unsigned long long)S->over_snaplen, "over_snaplen_first",
                         Py_BuildValue("[KII]", (unsigned long long)S->long_frame, S->long_len,
                                       S->long_snap),
                         "skipped",
                         u64list(S->skipped, SK_N), "flows", (unsigned long long)S->flows,
                         "handshakes", (unsigned long long)S->handshakes, "evicted_idle",
                         (unsigned long long)S->evicted_idle, "evicted_cap",
                         (unsigned long long)S->evicted_cap, "model", u64list(S->model, M_N),
                         "live", S->live, "filtered", (unsigned long long)S->filtered);
}

static PyObject *Scanner_get_error(Scanner *S, void *Py_UNUSED(closure))
{
    if (!S->err_kind)
        Py_RETURN_NONE;
    if (S->err_offset < 0)
        return Py_BuildValue("(isO)", S->err_kind == 2, S->err_msg, Py_None);
    return Py_BuildValue("(isL)", S->err_kind == 2, S->err_msg, (long long)S->err_offset);
}

static PyObject *Scanner_get_offset(Scanner *S, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(S->offset);
}

/* split(n): from now on, frames are decoded into segment records in n buckets (0: only the
   time span is kept), counted, and not analysed. */
static PyObject *Scanner_split(Scanner *S, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 0 || n > 65536 || S->split) {
        PyErr_SetString(PyExc_ValueError, "split(n) once, with 0 <= n <= 65536");
        return NULL;
    }
    if (n) {
        S->bk = calloc((size_t)n, sizeof *S->bk);
        S->bk_len = calloc((size_t)n, sizeof *S->bk_len);
        S->bk_cap = calloc((size_t)n, sizeof *S->bk_cap);
        if (!S->bk || !S->bk_len || !S->bk_cap)
            return PyErr_NoMemory();
    }
    S->split = (int)n + 1;
    Py_RETURN_NONE;
}

/* The segment records of each bucket since the last call, as bytes (one per bucket). */
static PyObject *Scanner_take_buckets(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    int n = S->split ? S->split - 1 : 0;
    PyObject *out = PyList_New(n);
    if (!out)
        return NULL;
    for (int b = 0; b < n; b++) {
        PyObject *v = PyBytes_FromStringAndSize((const char *)S->bk[b], (Py_ssize_t)S->bk_len[b]);
        if (!v) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, b, v);
        S->bk_len[b] = 0;
    }
    return out;
}

/* None before the first frame split, else (first frame's time, latest time, first link type,
   latest segment time or None): a scanner that splits is used for one capture only. */
static PyObject *Scanner_span(Scanner *S, PyObject *Py_UNUSED(ignored))
{
    if (!S->have_first)
        Py_RETURN_NONE;
    PyObject *clock = Py_None;
    if (S->segments) {
        clock = py_int128(S->now);
        if (!clock)
            return NULL;
    } else {
        Py_INCREF(clock);
    }
    return Py_BuildValue("(NNIN)", py_int128(S->first_ts), py_int128(S->max_ts),
                         (unsigned int)S->first_lt, clock);
}

/* feed_segments(records, clock_lo, clock_hi): analyse segment records; the table's clock is at
   least the given one (the time other captures before these records reached). */
static PyObject *Scanner_feed_segments(Scanner *S, PyObject *args)
{
    Py_buffer view;
    unsigned long long lo;
    long long hi;
    if (!PyArg_ParseTuple(args, "y*KL", &view, &lo, &hi))
        return NULL;
    if (S->split || S->py_error) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "feed_segments() on a splitting or failed scanner");
        return NULL;
    }
    int rc = feed_segrecs(S, view.buf, view.len, (i128)(((u128)(uint64_t)hi << 64) | lo));
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* tick(clock_lo, clock_hi): the table's clock reaches the time of a segment analysed elsewhere
   (FlowTable.tick): open events due are final, idle flows are evicted. */
static PyObject *Scanner_tick(Scanner *S, PyObject *args)
{
    unsigned long long lo;
    long long hi;
    if (!PyArg_ParseTuple(args, "KL", &lo, &hi))
        return NULL;
    if (S->py_error)
        Py_RETURN_NONE;
    i128 now = (i128)(((u128)(uint64_t)hi << 64) | lo);
    if (now > S->now)
        S->now = now;
    if (S->q_head != S->q_tail)
        close_due(S, S->now);
    expire(S);
    if (S->q_head != S->q_tail && !ev_at(S, S->q_head)->open)
        release(S);
    if (S->py_error)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Scanner_methods[] = {
    {"begin", (PyCFunction)Scanner_begin, METH_VARARGS,
     "begin(fmt, base=0): a capture of format fmt (1 pcap, 2 pcapng) starts, its frames "
     "numbered base + 1, base + 2, ...; flows carry on."},
    {"split", (PyCFunction)Scanner_split, METH_O,
     "split(n): decode frames into segment records in n buckets by flow instead of analysing."},
    {"take_buckets", (PyCFunction)Scanner_take_buckets, METH_NOARGS,
     "The segment records of each bucket since the last call."},
    {"span", (PyCFunction)Scanner_span, METH_NOARGS,
     "None or (first time, latest time, first link type, latest segment time or None)."},
    {"feed_segments", (PyCFunction)Scanner_feed_segments, METH_VARARGS,
     "feed_segments(records, clock_lo, clock_hi): analyse segment records."},
    {"tick", (PyCFunction)Scanner_tick, METH_VARARGS,
     "tick(clock_lo, clock_hi): the table's clock reaches a time without a segment here."},
    {"feed", (PyCFunction)Scanner_feed, METH_VARARGS,
     "feed(buffer, eof) -> (consumed, need): analyse every complete record in buffer."},
    {"take_events", (PyCFunction)Scanner_take_events, METH_NOARGS,
     "The final event tuples found since the last call, in frame order."},
    {"flush", (PyCFunction)Scanner_flush, METH_NOARGS,
     "The capture is over (or damaged): every open event is final; take_events() has them."},
    {"advance", (PyCFunction)Scanner_advance, METH_O,
     "advance(now_ns): the clock reaches now_ns without a packet; events due are final."},
    {"mark_flows", (PyCFunction)Scanner_mark_flows, METH_O,
     "mark_flows(on): record, per frame fed, None (skipped) or (flow key bytes, event bits)."},
    {"take_marks", (PyCFunction)Scanner_take_marks, METH_NOARGS,
     "The flow marks recorded since the last call, one per frame, in frame order."},
    {"counters", (PyCFunction)Scanner_counters, METH_NOARGS, "Frame, flow and model counters."},
    {"series", (PyCFunction)Scanner_series, METH_VARARGS,
     "series(cap, before, after): collect plot series per connection (treason.series)."},
    {"filter", (PyCFunction)Scanner_filter, METH_O,
     "filter({linktype: [(code, jt, jf, k), ...]}): analyse only frames the program keeps."},
    {"take_series", (PyCFunction)Scanner_take_series, METH_NOARGS,
     "(flow key bytes, packed points) of every connection that made an event; ends them."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Scanner_getset[] = {
    {"error", (getter)Scanner_get_error, NULL,
     "None, or (truncated, message, offset) for the damage that stopped the scan.", NULL},
    {"offset", (getter)Scanner_get_offset, NULL, "Bytes of the stream consumed so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "treason._fastscan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Scanner(max_flows, idle_lo, idle_hi): capture framing, decoder, flow table.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
    .tp_getset = Scanner_getset,
};

/* -- live capture (treason.live.capture.PacketSocket.read_records) ------------------------ */

#ifndef TP_STATUS_VLAN_TPID_VALID
#define TP_STATUS_VLAN_TPID_VALID (1 << 6)
#endif

/*
 * recv_records(fd, buffer, limit, snaplen, ethernet) -> (bytes used, packets): the packets
 * queued on a packet socket (up to limit, without blocking) as pcap records with nanosecond
 * times, back to back in buffer: the same times, lengths and put-back VLAN tags that
 * PacketSocket.read gives as Frames, without a Python object or call per packet.
 */
static PyObject *recv_records(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd, ethernet;
    Py_ssize_t limit;
    unsigned int snaplen;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iw*nIp", &fd, &view, &limit, &snaplen, &ethernet))
        return NULL;
    uint8_t *buf = view.buf;
    Py_ssize_t pos = 0, count = 0, slot = 16 + (Py_ssize_t)snaplen + 4;
    int err = 0;
    union {
        char raw[CMSG_SPACE(sizeof(struct tpacket_auxdata)) + CMSG_SPACE(sizeof(struct timespec))];
        struct cmsghdr align;
    } control;
    while (count < limit && view.len - pos >= slot) {
        uint8_t *data = buf + pos + 16;
        struct iovec iov = {data, snaplen};
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.raw;
        msg.msg_controllen = sizeof control.raw;
        ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                err = errno;
            break;
        }
        uint32_t caplen = (uint32_t)n, orig_len = (uint32_t)n, sec = 0, nsec = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA &&
                c->cmsg_len >= CMSG_LEN(sizeof(struct tpacket_auxdata))) {
                struct tpacket_auxdata aux;
                memcpy(&aux, CMSG_DATA(c), sizeof aux);
                orig_len = aux.tp_len;
                if ((aux.tp_status & TP_STATUS_VLAN_VALID) && ethernet) {
                    uint16_t tpid = aux.tp_vlan_tpid;
                    if (!(aux.tp_status & TP_STATUS_VLAN_TPID_VALID) || !tpid)
                        tpid = 0x8100;
                    uint32_t at = caplen < 12 ? caplen : 12;
                    memmove(data + at + 4, data + at, caplen - at);
                    data[at] = (uint8_t)(tpid >> 8);
                    data[at + 1] = (uint8_t)tpid;
                    data[at + 2] = (uint8_t)(aux.tp_vlan_tci >> 8);
                    data[at + 3] = (uint8_t)aux.tp_vlan_tci;
                    caplen += 4;
                    orig_len += 4;
                }
            } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_TIMESTAMPNS &&
                       c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                sec = (uint32_t)ts.tv_sec;
                nsec = (uint32_t)ts.tv_nsec;
            }
        }
        uint32_t head[4] = {sec, nsec, caplen, orig_len};
        memcpy(buf + pos, head, sizeof head);
        pos += 16 + (Py_ssize_t)caplen;
        count++;
    }
    PyBuffer_Release(&view);
    if (err && !count) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("nn", pos, count);
}

static PyMethodDef fastscan_functions[] = {
    {"recv_records", recv_records, METH_VARARGS,
     "recv_records(fd, buffer, limit, snaplen, ethernet) -> (bytes used, packets)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastscan_module = {
    PyModuleDef_HEAD_INIT, "_fastscan", "Compiled capture scanner for treason.engine.compiled.", -1,
    fastscan_functions,
};

/* A tuple of names as a module constant. */
static int add_names(PyObject *m, const char *attr, const char *const *names, int n)
{
    PyObject *t = PyTuple_New(n);
    if (!t)
        return -1;
    for (int i = 0; i < n; i++) {
        PyObject *s = PyUnicode_FromString(names[i]);
        if (!s) {
            Py_DECREF(t);
            return -1;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    if (PyModule_AddObject(m, attr, t) < 0) {
        Py_DECREF(t);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__fastscan(void)
{
    if (PyType_Ready(&ScannerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fastscan_module);
    if (!m)
        return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    if (add_names(m, "SKIP_REASONS", SKIP_NAMES, SK_N) < 0 ||
        add_names(m, "MODEL_COUNTERS", MODEL_NAMES, M_N) < 0 ||
        add_names(m, "EVENT_FIELDS", EVENT_NAMES, (int)(sizeof EVENT_NAMES / sizeof *EVENT_NAMES)) < 0 ||
        PyModule_AddIntConstant(m, "MARK_EVENT", MARK_EVENT) < 0 ||
        PyModule_AddIntConstant(m, "MARK_SHOWN", MARK_SHOWN) < 0 ||
        PyModule_AddIntConstant(m, "MARK_ZERO", MARK_ZERO) < 0 ||
        PyModule_AddStringConstant(m, "FILTERED", FILTERED_NAME) < 0 ||
        PyModule_AddStringConstant(m, "SERIES_POINT", SERIES_POINT) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RECORD", MAX_RECORD) < 0 ||
        PyModule_AddIntConstant(m, "MAX_BLOCK", MAX_BLOCK) < 0 ||
        PyModule_AddIntConstant(m, "CONN_BYTES", (long)sizeof(Conn)) < 0 ||
        PyModule_AddIntConstant(m, "UNKNOWN_SCALE_BYTES", (long)sizeof(Unknown)) < 0 ||
        PyModule_AddStringConstant(m, "SEGREC_FORMAT", SEGREC_FORMAT) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
