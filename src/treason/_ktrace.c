/*
 * treason._ktrace: the hot loop of `treason trace` in C.
 *
 * The same work as treason.ktrace.ringbuf.page_records + treason.ktrace.sockets.SocketTable
 * (the readable reference, which the tests hold this to event for event): records out of the
 * binary ring-buffer pages of trace_pipe_raw, merged in time order, and the per-socket right
 * edges and zero-window stalls. Python sees only the events (as tuples, made into
 * treason.events.Event by treason.ktrace.sockets.make_event), so a busy host costs no Python
 * work per received segment.
 *
 * Layouts come from the kernel's format files (passed in by treason.ktrace.session): nothing
 * about a record's layout is hard-coded here except the ring-buffer header word, which
 * events/header_event documents and which has not changed since Linux 2.6.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define ADDR_MAX 28
#define TYPE_PADDING 29
#define TYPE_TIME_EXTEND 30
#define TYPE_TIME_STAMP 31
#define MISSED_EVENTS (1u << 31)
#define COMMIT_LENGTH ((1u << 30) - 1)
#define ABS_MASK ((1ull << 59) - 1)
#define MAX_SHIFT 14

enum { KIND_PROBE, KIND_RETRANSMIT, KIND_DESTROY, KIND_LOSS };
#define CA_LOSS 4 /* tcp_cong_state_set's cong_state when the retransmission timer fires */
enum { CLS_RETRACTION = 1, CLS_SHRINK, CLS_BEYOND, CLS_KERNEL };

typedef struct {
    int64_t ts;
    uint64_t order; /* arrival order: ties in time keep it */
    uint64_t sk, cookie;
    uint32_t una, nxt, wnd;
    uint16_t lport, pport;
    uint8_t kind;
    uint8_t local[ADDR_MAX], peer[ADDR_MAX];
} Rec;

typedef struct {
    int64_t number, ts;
    uint32_t old_edge, new_edge, retreat, una, nxt, wnd;
    uint8_t cls, shift;
} Ev;

typedef struct {
    uint64_t key; /* skaddr; 0 = empty slot */
    uint64_t cookie;
    int64_t last, fired; /* fired: the timer's time since the last record, -1 = none */
    uint32_t una, nxt, wnd;
    uint16_t lport, pport;
    uint8_t shift, stalled, followed, has_held;
    uint8_t local[ADDR_MAX], peer[ADDR_MAX];
    Ev held;
} Sock;

typedef struct {
    PyObject_HEAD
    /* page layout */
    Py_ssize_t data_offset, data_size, commit_offset, commit_size;
    /* record layouts */
    int probe_id, rt_id, destroy_id, loss_id;
    Py_ssize_t p_sport, p_dport, p_nxt, p_una, p_wnd, p_cookie, p_sk, p_saddr, p_daddr, addr_size;
    Py_ssize_t p_min, rt_sk, destroy_sk, loss_sk, loss_state;
    /* records waiting to be fed */
    Rec *recs;
    Py_ssize_t nrecs, caprecs;
    uint64_t order;
    /* socket table: open addressing, linear probing, backward-shift deletion */
    Sock *socks;
    Py_ssize_t nsocks, capsocks;
    Py_ssize_t max_sockets;
    PyObject *accept; /* None or callable(local: bytes, peer: bytes) -> bool */
    PyObject *out;    /* list receiving events during a call */
    int64_t records, probes, retransmits, seen, evicted, last_ts, lost_pages;
} Tracer;

static inline int32_t diff32(uint32_t a, uint32_t b) { return (int32_t)(a - b); }
static inline int before32(uint32_t a, uint32_t b) { return diff32(a, b) < 0; }

static inline uint64_t rd(const uint8_t *p, Py_ssize_t size) {
    uint64_t v = 0;
    switch (size) {
    case 1: v = *p; break;
    case 2: { uint16_t x; memcpy(&x, p, 2); v = x; break; }
    case 4: { uint32_t x; memcpy(&x, p, 4); v = x; break; }
    case 8: memcpy(&v, p, 8); break;
    }
    return v;
}

static inline uint64_t hash64(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static Sock *sock_find(Tracer *t, uint64_t key) {
    if (!t->capsocks) return NULL;
    Py_ssize_t mask = t->capsocks - 1, i = (Py_ssize_t)(hash64(key) & (uint64_t)mask);
    while (t->socks[i].key) {
        if (t->socks[i].key == key) return &t->socks[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

static int sock_grow(Tracer *t) {
    Py_ssize_t ncap = t->capsocks ? t->capsocks * 2 : 1024;
    Sock *n = PyMem_Calloc((size_t)ncap, sizeof(Sock));
    if (!n) { PyErr_NoMemory(); return -1; }
    for (Py_ssize_t j = 0; j < t->capsocks; j++) {
        if (!t->socks[j].key) continue;
        Py_ssize_t i = (Py_ssize_t)(hash64(t->socks[j].key) & (uint64_t)(ncap - 1));
        while (n[i].key) i = (i + 1) & (ncap - 1);
        n[i] = t->socks[j];
    }
    PyMem_Free(t->socks);
    t->socks = n;
    t->capsocks = ncap;
    return 0;
}

static Sock *sock_insert(Tracer *t, uint64_t key) {
    if ((t->nsocks + 1) * 2 > t->capsocks && sock_grow(t) < 0) return NULL;
    Py_ssize_t mask = t->capsocks - 1, i = (Py_ssize_t)(hash64(key) & (uint64_t)mask);
    while (t->socks[i].key) i = (i + 1) & mask;
    memset(&t->socks[i], 0, sizeof(Sock));
    t->socks[i].key = key;
    t->nsocks++;
    return &t->socks[i];
}

static void sock_delete(Tracer *t, Sock *s) {
    Py_ssize_t mask = t->capsocks - 1, i = s - t->socks, j = i;
    t->socks[i].key = 0;
    t->nsocks--;
    for (;;) {
        j = (j + 1) & mask;
        if (!t->socks[j].key) return;
        Py_ssize_t home = (Py_ssize_t)(hash64(t->socks[j].key) & (uint64_t)mask);
        /* move j back to i unless its home lies cyclically in (i, j] */
        if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
            t->socks[i] = t->socks[j];
            t->socks[j].key = 0;
            i = j;
        }
    }
}

/* (cls, number, ts, local, peer, lport, pport, old, new, retreat, una, nxt, wnd, shift) */
static int emit(Tracer *t, const Sock *s, const Ev *e) {
    PyObject *tup = Py_BuildValue(
        "(iLLy#y#iiIIIIIIi)", (int)e->cls, (long long)e->number, (long long)e->ts,
        (const char *)s->local, t->addr_size, (const char *)s->peer, t->addr_size, (int)s->lport,
        (int)s->pport, e->old_edge, e->new_edge, e->retreat, e->una, e->nxt, e->wnd,
        (int)e->shift);
    if (!tup) return -1;
    int rc = PyList_Append(t->out, tup);
    Py_DECREF(tup);
    return rc;
}

static void make_ev(Ev *e, const Sock *s, int64_t number, int64_t ts, int cls, uint32_t old_edge,
                    uint32_t new_edge, uint32_t retreat) {
    e->number = number;
    e->ts = ts;
    e->cls = (uint8_t)cls;
    e->old_edge = old_edge;
    e->new_edge = new_edge;
    e->retreat = retreat;
    e->una = s->una;
    e->nxt = s->nxt;
    e->wnd = s->wnd;
    e->shift = s->shift;
}

static int emit_held(Tracer *t, Sock *s) {
    if (!s->has_held) return 0;
    s->has_held = 0;
    return emit(t, s, &s->held);
}

static int destroy(Tracer *t, Sock *s) {
    int rc = emit_held(t, s);
    sock_delete(t, s);
    return rc;
}

static int add_sock(Tracer *t, const Rec *r) {
    Sock *old = sock_find(t, r->sk);
    if (old && destroy(t, old) < 0) return -1;
    if (t->nsocks >= t->max_sockets && t->nsocks) {
        Sock *least = NULL;
        for (Py_ssize_t i = 0; i < t->capsocks; i++)
            if (t->socks[i].key && (!least || t->socks[i].last < least->last)) least = &t->socks[i];
        if (destroy(t, least) < 0) return -1;
        t->evicted++;
    }
    Sock *s = sock_insert(t, r->sk);
    if (!s) return -1;
    s->cookie = r->cookie;
    s->lport = r->lport;
    s->pport = r->pport;
    s->una = r->una;
    s->nxt = r->nxt;
    s->wnd = r->wnd;
    s->last = r->ts;
    s->fired = -1;
    s->shift = MAX_SHIFT; /* the first window may be the handshake's, never scaled */
    s->followed = 1;
    memcpy(s->local, r->local, ADDR_MAX);
    memcpy(s->peer, r->peer, ADDR_MAX);
    s->stalled = r->wnd == 0 && before32(r->una, r->nxt);
    t->seen++;
    if (t->accept != Py_None) {
        PyObject *res = PyObject_CallFunction(t->accept, "y#y#", (const char *)r->local,
                                              t->addr_size, (const char *)r->peer, t->addr_size);
        if (!res) return -1;
        int ok = PyObject_IsTrue(res);
        Py_DECREF(res);
        if (ok < 0) return -1;
        /* the table may have moved while Python ran: find the socket again */
        s = sock_find(t, r->sk);
        if (s) s->followed = (uint8_t)ok;
    }
    return 0;
}

static int probe(Tracer *t, const Rec *r, int64_t number) {
    Sock *s = sock_find(t, r->sk);
    if (!s || s->cookie != r->cookie || s->lport != r->lport || s->pport != r->pport)
        return add_sock(t, r);
    if (!s->followed) {
        s->last = r->ts;
        return 0;
    }
    uint32_t old_edge = s->una + s->wnd, new_edge = r->una + r->wnd;
    s->una = r->una;
    s->nxt = r->nxt;
    s->wnd = r->wnd;
    s->last = r->ts;
    int64_t fired = s->fired;
    s->fired = -1;
    if (r->wnd) {
        if (r->wnd & ((1u << s->shift) - 1)) s->shift = (uint8_t)__builtin_ctz(r->wnd);
    } else if (before32(r->una, r->nxt)) {
        if (!s->stalled) {
            /* a zero window with data outstanding begins: the kernel's message condition */
            s->stalled = 1;
            int32_t d = diff32(old_edge, new_edge);
            Ev e;
            make_ev(&e, s, number, r->ts, CLS_KERNEL, old_edge, new_edge, d > 0 ? (uint32_t)d : 0);
            if (fired < 0) {
                s->held = e; /* the kernel prints when its retransmission timer fires */
                s->has_held = 1;
            } else {
                e.ts = fired;
                return emit(t, s, &e);
            }
        }
        return 0;
    }
    if (s->stalled) {
        s->stalled = 0;
        if (emit_held(t, s) < 0) return -1;
    }
    if (old_edge == new_edge) return 0;
    int32_t retreat = diff32(old_edge, new_edge);
    if (retreat <= 0) return 0;
    int cls;
    if ((uint32_t)retreat < (1u << s->shift))
        cls = CLS_RETRACTION;
    else if (before32(new_edge, r->nxt))
        cls = CLS_BEYOND;
    else
        cls = CLS_SHRINK;
    Ev e;
    make_ev(&e, s, number, r->ts, cls, old_edge, new_edge, (uint32_t)retreat);
    return emit(t, s, &e);
}

/* the retransmission timer fired: in a stall, the zero-window probe, where the kernel logs */
static int timer(Tracer *t, const Rec *r) {
    Sock *s = sock_find(t, r->sk);
    if (!s) return 0;
    if (s->has_held) {
        s->held.ts = r->ts;
        return emit_held(t, s);
    }
    if (s->fired < 0) s->fired = r->ts;
    return 0;
}

/* -- records ---------------------------------------------------------------------------- */

static Rec *new_rec(Tracer *t) {
    if (t->nrecs == t->caprecs) {
        Py_ssize_t ncap = t->caprecs ? t->caprecs * 2 : 4096;
        Rec *n = PyMem_Realloc(t->recs, (size_t)ncap * sizeof(Rec));
        if (!n) { PyErr_NoMemory(); return NULL; }
        t->recs = n;
        t->caprecs = ncap;
    }
    Rec *r = &t->recs[t->nrecs++];
    r->order = t->order++;
    return r;
}

static int take(Tracer *t, const uint8_t *p, Py_ssize_t avail, int64_t ts) {
    if (avail < 2) return 0;
    int type = (int)rd(p, 2);
    if (type == t->probe_id && avail >= t->p_min) {
        Rec *r = new_rec(t);
        if (!r) return -1;
        r->kind = KIND_PROBE;
        r->ts = ts;
        r->sk = rd(p + t->p_sk, 8);
        r->cookie = t->p_cookie >= 0 ? rd(p + t->p_cookie, 8) : 0;
        r->lport = (uint16_t)rd(p + t->p_sport, 2);
        r->pport = (uint16_t)rd(p + t->p_dport, 2);
        r->una = (uint32_t)rd(p + t->p_una, 4);
        r->nxt = (uint32_t)rd(p + t->p_nxt, 4);
        r->wnd = (uint32_t)rd(p + t->p_wnd, 4);
        memcpy(r->local, p + t->p_saddr, (size_t)t->addr_size);
        memcpy(r->peer, p + t->p_daddr, (size_t)t->addr_size);
    } else if ((type == t->rt_id && avail >= t->rt_sk + 8) ||
               (type == t->destroy_id && t->destroy_id >= 0 && avail >= t->destroy_sk + 8)) {
        Rec *r = new_rec(t);
        if (!r) return -1;
        r->kind = type == t->rt_id ? KIND_RETRANSMIT : KIND_DESTROY;
        r->ts = ts;
        r->sk = rd(p + (type == t->rt_id ? t->rt_sk : t->destroy_sk), 8);
    } else if (type == t->loss_id && t->loss_id >= 0 && avail >= t->loss_sk + 8 &&
               avail > t->loss_state && p[t->loss_state] == CA_LOSS) {
        Rec *r = new_rec(t);
        if (!r) return -1;
        r->kind = KIND_LOSS;
        r->ts = ts;
        r->sk = rd(p + t->loss_sk, 8);
    }
    return 0;
}

static PyObject *Tracer_add_page(Tracer *t, PyObject *arg) {
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *page = buf.buf;
    Py_ssize_t len = buf.len;
    int missed = 0;
    if (len >= t->data_offset) {
        int64_t ts = (int64_t)rd(page, 8);
        uint64_t commit = rd(page + t->commit_offset, t->commit_size);
        missed = (commit & MISSED_EVENTS) != 0;
        Py_ssize_t pos = t->data_offset;
        Py_ssize_t size = (Py_ssize_t)(commit & COMMIT_LENGTH);
        if (size > t->data_size) size = t->data_size;
        Py_ssize_t end = pos + size;
        if (end > len) end = len;
        while (pos + 4 <= end) {
            uint32_t head = (uint32_t)rd(page + pos, 4);
            uint32_t kind = head & 31, delta = head >> 5;
            if (kind && kind < TYPE_PADDING) {
                ts += delta;
                if (take(t, page + pos + 4, end - pos - 4, ts) < 0) goto fail;
                pos += 4 + ((Py_ssize_t)kind << 2);
            } else if (pos + 8 > end) {
                break;
            } else {
                uint32_t word = (uint32_t)rd(page + pos + 4, 4);
                if (kind == 0) {
                    ts += delta;
                    if (take(t, page + pos + 8, end - pos - 8, ts) < 0) goto fail;
                    pos += 4 + (((Py_ssize_t)word + 3) & ~(Py_ssize_t)3);
                } else if (kind == TYPE_TIME_EXTEND) {
                    ts += ((int64_t)word << 27) + delta;
                    pos += 8;
                } else if (kind == TYPE_TIME_STAMP) {
                    ts = (int64_t)((((uint64_t)word << 27) | delta) | ((uint64_t)ts & ~ABS_MASK));
                    pos += 8;
                } else {
                    if (delta == 0) break;
                    ts += delta;
                    pos += 4 + (Py_ssize_t)word;
                }
            }
        }
    }
    t->lost_pages += missed;
    PyBuffer_Release(&buf);
    return PyBool_FromLong(missed);
fail:
    PyBuffer_Release(&buf);
    return NULL;
}

static int rec_cmp(const void *a, const void *b) {
    const Rec *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static PyObject *begin(Tracer *t) {
    t->out = PyList_New(0);
    return t->out;
}

static PyObject *finish(Tracer *t, int ok) {
    PyObject *out = t->out;
    t->out = NULL;
    if (!ok) {
        Py_XDECREF(out);
        return NULL;
    }
    return out;
}

/* run(cutoff, final): feed the records at or before cutoff (all when final), in time order */
static PyObject *Tracer_run(Tracer *t, PyObject *args) {
    long long cutoff;
    int final;
    if (!PyArg_ParseTuple(args, "Lp", &cutoff, &final)) return NULL;
    if (!begin(t)) return NULL;
    qsort(t->recs, (size_t)t->nrecs, sizeof(Rec), rec_cmp);
    Py_ssize_t n = 0;
    int ok = 1;
    while (n < t->nrecs && (final || t->recs[n].ts <= cutoff)) {
        const Rec *r = &t->recs[n++];
        int64_t number = ++t->records;
        t->last_ts = r->ts;
        int rc = 0;
        if (r->kind == KIND_PROBE) {
            t->probes++;
            rc = probe(t, r, number);
        } else if (r->kind == KIND_RETRANSMIT) {
            t->retransmits++;
            /* without tcp_cong_state_set, each retransmission stands for the timer */
            if (t->loss_id < 0) rc = timer(t, r);
        } else if (r->kind == KIND_LOSS) {
            rc = timer(t, r);
        } else {
            Sock *s = sock_find(t, r->sk);
            if (s) rc = destroy(t, s);
        }
        if (rc < 0) { ok = 0; break; }
    }
    memmove(t->recs, t->recs + n, (size_t)(t->nrecs - n) * sizeof(Rec));
    t->nrecs -= n;
    return finish(t, ok);
}

static PyObject *Tracer_flush(Tracer *t, PyObject *Py_UNUSED(ignored)) {
    if (!begin(t)) return NULL;
    int ok = 1;
    for (Py_ssize_t i = 0; i < t->capsocks && ok; i++)
        if (t->socks[i].key && emit_held(t, &t->socks[i]) < 0) ok = 0;
    return finish(t, ok);
}

static PyObject *Tracer_expire(Tracer *t, PyObject *arg) {
    long long limit = PyLong_AsLongLong(arg);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    if (!begin(t)) return NULL;
    int ok = 1;
    for (;;) {
        Sock *idle = NULL;
        for (Py_ssize_t i = 0; i < t->capsocks; i++)
            if (t->socks[i].key && t->socks[i].last < limit) { idle = &t->socks[i]; break; }
        if (!idle) break;
        if (destroy(t, idle) < 0) { ok = 0; break; }
        t->evicted++;
    }
    return finish(t, ok);
}

static PyObject *Tracer_counters(Tracer *t, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("{sLsLsLsnsLsLsLsL}", "records", (long long)t->records, "probes",
                         (long long)t->probes, "retransmits", (long long)t->retransmits,
                         "sockets", t->nsocks, "seen", (long long)t->seen, "evicted",
                         (long long)t->evicted, "last_ts", (long long)t->last_ts, "lost_pages",
                         (long long)t->lost_pages);
}

static int Tracer_init(Tracer *t, PyObject *args, PyObject *kw) {
    static char *names[] = {"page",        "probe",  "retransmit", "destroy", "loss",
                            "max_sockets", "accept", NULL};
    PyObject *accept;
    Py_ssize_t max_sockets;
    if (!PyArg_ParseTupleAndKeywords(
            args, kw, "(nnnn)(innnnnnnnnn)(in)(in)(inn)nO", names, &t->data_offset,
            &t->data_size, &t->commit_offset, &t->commit_size, &t->probe_id, &t->p_sport,
            &t->p_dport, &t->p_nxt, &t->p_una, &t->p_wnd, &t->p_cookie, &t->p_sk, &t->p_saddr,
            &t->p_daddr, &t->addr_size, &t->rt_id, &t->rt_sk, &t->destroy_id, &t->destroy_sk,
            &t->loss_id, &t->loss_sk, &t->loss_state, &max_sockets, &accept))
        return -1;
    if (t->addr_size > ADDR_MAX || t->addr_size < 8 || (t->commit_size != 4 && t->commit_size != 8)) {
        PyErr_SetString(PyExc_ValueError, "unexpected record layout");
        return -1;
    }
    Py_ssize_t ends[] = {t->p_sport + 2, t->p_dport + 2, t->p_nxt + 4, t->p_una + 4,
                         t->p_wnd + 4, t->p_cookie + 8, t->p_sk + 8, t->p_saddr + t->addr_size,
                         t->p_daddr + t->addr_size};
    t->p_min = 2;
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        if (ends[i] > t->p_min) t->p_min = ends[i];
    t->max_sockets = max_sockets;
    Py_INCREF(accept);
    Py_XSETREF(t->accept, accept);
    return 0;
}

static void Tracer_dealloc(Tracer *t) {
    PyMem_Free(t->recs);
    PyMem_Free(t->socks);
    Py_XDECREF(t->accept);
    Py_XDECREF(t->out);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef Tracer_methods[] = {
    {"add_page", (PyCFunction)Tracer_add_page, METH_O,
     "Take the records of one trace_pipe_raw page; True when events were lost before it."},
    {"run", (PyCFunction)Tracer_run, METH_VARARGS,
     "run(cutoff, final): feed records up to cutoff in time order; the events made final."},
    {"flush", (PyCFunction)Tracer_flush, METH_NOARGS, "Every held stall event, now final."},
    {"expire", (PyCFunction)Tracer_expire, METH_O,
     "expire(limit): forget sockets last seen before limit; their held events."},
    {"counters", (PyCFunction)Tracer_counters, METH_NOARGS, "What was read so far."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TracerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "treason._ktrace.Tracer",
    .tp_basicsize = sizeof(Tracer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ring-buffer pages in, window-shrink events out (see treason.ktrace.sockets).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tracer_init,
    .tp_dealloc = (destructor)Tracer_dealloc,
    .tp_methods = Tracer_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "treason._ktrace",
    "The hot loop of treason trace: ring-buffer pages to window-shrink events.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ktrace(void) {
    if (PyType_Ready(&TracerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&TracerType);
    if (PyModule_AddObject(m, "Tracer", (PyObject *)&TracerType) < 0) {
        Py_DECREF(&TracerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
