/* The collector's rows for an OTLP/HTTP protobuf traces request, read straight off its bytes.
 *
 * Why this exists: building the store's rows from the decoded protobuf cost ~8 us a span in
 * Python (each field read builds an object, and every span was serialised again to be stored),
 * as much as SQLite's commit.  This walks the request's wire format once, takes each span's
 * bytes as they came, and builds exactly the rows `tracebridge.collector.span_rows.prepare`
 * builds from the decoded message — that function is the reference, and the tests compare
 * the two on every shape they know and on mutated bodies.
 *
 * The request has already been decoded by upb (the collector rejects what upb rejects), so a
 * malformed body here means a bug or a shape we do not follow: every read is bounds-checked,
 * and anything unexpected raises ValueError, on which the caller uses the Python path.
 * Protobuf's rules are kept: the last value of a singular field wins, a message field that
 * appears twice is merged (its bytes concatenated), unknown fields and fields of an unexpected
 * wire type are skipped.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_TIME_NS 9223372036854775807ULL /* the year 2262: tracebridge.otlp.MAX_TIME_NS */

typedef struct {
    const unsigned char *p;
    const unsigned char *end;
} Reader;

typedef struct {
    const unsigned char *data;
    Py_ssize_t size;
} Slice;

static int fail(const char *what) {
    PyErr_Format(PyExc_ValueError, "span scan: %s", what);
    return -1;
}

static int read_varint(Reader *r, uint64_t *out) {
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return fail("truncated varint");
        unsigned char byte = *r->p++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
    }
    return fail("varint too long");
}

/* One field: its number and wire type; for length-delimited fields the payload, for varints
 * the value, for fixed64 the value.  Groups (wire types 3 and 4) are not OTLP: refused. */
static int read_field(Reader *r, uint32_t *number, int *wire, uint64_t *value, Slice *payload) {
    uint64_t tag;
    if (read_varint(r, &tag) < 0) return -1;
    *number = (uint32_t)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*number == 0) return fail("field number 0");
    switch (*wire) {
    case 0:
        return read_varint(r, value);
    case 1:
        if (r->end - r->p < 8) return fail("truncated fixed64");
        memcpy(value, r->p, 8); /* little-endian hosts only: checked at import */
        r->p += 8;
        return 0;
    case 2: {
        uint64_t length;
        if (read_varint(r, &length) < 0) return -1;
        if (length > (uint64_t)(r->end - r->p)) return fail("length past the end");
        payload->data = r->p;
        payload->size = (Py_ssize_t)length;
        r->p += length;
        return 0;
    }
    case 5:
        if (r->end - r->p < 4) return fail("truncated fixed32");
        *value = 0;
        memcpy(value, r->p, 4);
        r->p += 4;
        return 0;
    default:
        return fail("unsupported wire type");
    }
}

static Reader reader_of(Slice s) {
    Reader r = {s.data, s.data + s.size};
    return r;
}

static const char HEX[] = "0123456789abcdef";

static PyObject *hex_of(Slice s) {
    PyObject *text = PyUnicode_New(s.size * 2, 127);
    if (text == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (Py_ssize_t i = 0; i < s.size; i++) {
        out[2 * i] = HEX[s.data[i] >> 4];
        out[2 * i + 1] = HEX[s.data[i] & 15];
    }
    return text;
}

static PyObject *text_of(Slice s) {
    return PyUnicode_DecodeUTF8((const char *)s.data, s.size, "strict");
}

static int all_zero(Slice s) {
    for (Py_ssize_t i = 0; i < s.size; i++)
        if (s.data[i]) return 0;
    return 1;
}

/* A message field that may appear more than once: protobuf merges the occurrences, which for
 * the fields read here is the same as reading their bytes one after another. */
typedef struct {
    Slice parts[8];
    int count;
} Pieces;

static int add_piece(Pieces *pieces, Slice s) {
    if (pieces->count == 8) return fail("a message field repeated more than 8 times");
    pieces->parts[pieces->count++] = s;
    return 0;
}

/* An AnyValue's text as the collector indexes it (str of the value, lower-cased; None for
 * arrays, maps, bytes and unset values). */
static PyObject *indexed_text(const Pieces *value) {
    int which = 0;
    Slice string = {NULL, 0};
    uint64_t scalar = 0;
    for (int i = 0; i < value->count; i++) {
        Reader r = reader_of(value->parts[i]);
        while (r.p < r.end) {
            uint32_t number;
            int wire;
            uint64_t v = 0;
            Slice payload = {NULL, 0};
            if (read_field(&r, &number, &wire, &v, &payload) < 0) return NULL;
            if (number == 1 && wire == 2) { which = 1; string = payload; }
            else if (number == 2 && wire == 0) { which = 2; scalar = v; }
            else if (number == 3 && wire == 0) { which = 3; scalar = v; }
            else if (number == 4 && wire == 1) { which = 4; scalar = v; }
            else if (number >= 5 && number <= 7 && wire == 2) { which = 5; }
        }
    }
    switch (which) {
    case 1:
        return text_of(string);
    case 2:
        return PyUnicode_FromString(scalar ? "true" : "false");
    case 3:
        return PyUnicode_FromFormat("%lld", (long long)(int64_t)scalar);
    case 4: {
        double d;
        memcpy(&d, &scalar, 8);
        PyObject *number = PyFloat_FromDouble(d);
        if (number == NULL) return NULL;
        PyObject *shown = PyObject_Str(number);
        Py_DECREF(number);
        if (shown == NULL) return NULL;
        PyObject *lowered = PyObject_CallMethod(shown, "lower", NULL);
        Py_DECREF(shown);
        return lowered;
    }
    default:
        Py_RETURN_NONE;
    }
}

/* The string value of an AnyValue, "" if it holds anything else (the resource's service.name). */
static PyObject *string_value(const Pieces *value) {
    int which = 0;
    Slice string = {NULL, 0};
    for (int i = 0; i < value->count; i++) {
        Reader r = reader_of(value->parts[i]);
        while (r.p < r.end) {
            uint32_t number;
            int wire;
            uint64_t v = 0;
            Slice payload = {NULL, 0};
            if (read_field(&r, &number, &wire, &v, &payload) < 0) return NULL;
            if (number == 1 && wire == 2) { which = 1; string = payload; }
            else if ((number == 2 || number == 3) && wire == 0) which = 2;
            else if (number == 4 && wire == 1) which = 2;
            else if (number >= 5 && number <= 7 && wire == 2) which = 2;
        }
    }
    if (which == 1) return text_of(string);
    return PyUnicode_FromStringAndSize("", 0);
}

/* A KeyValue: its key's bytes and its value's pieces. */
static int key_value(Slice s, Slice *key, Pieces *value) {
    Reader r = reader_of(s);
    key->data = s.data;
    key->size = 0;
    value->count = 0;
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) return -1;
        if (number == 1 && wire == 2) *key = payload;
        else if (number == 2 && wire == 2 && add_piece(value, payload) < 0) return -1;
    }
    return 0;
}

typedef struct {
    PyObject *span_rows;      /* list */
    PyObject *attribute_rows; /* set */
    PyObject *link_rows;      /* list */
    PyObject *resource_rows;  /* dict */
    PyObject *indexed;        /* tuple of (bytes key, str key) */
    Py_ssize_t max_value;
    Py_ssize_t accepted, rejected;
    const char *reason;
} Out;

static int key_is(Slice key, PyObject *wanted) {
    Py_ssize_t size = PyBytes_GET_SIZE(wanted);
    return size == key.size && memcmp(PyBytes_AS_STRING(wanted), key.data, size) == 0;
}

/* The rows of one span: its span row, its indexed attributes, its links.  Two passes over its
 * bytes: the fields that decide whether it is kept and what its rows say, then the repeated
 * attributes and links, which need the trace id in hex. */
static int span(Out *out, Slice s, PyObject *service, PyObject *resource_id, PyObject *scope) {
    Slice trace = {s.data, 0}, span_id = {s.data, 0}, parent = {s.data, 0}, name = {s.data, 0};
    uint64_t kind = 0, start = 0, end = 0, status_code = 0;
    Reader r = reader_of(s);
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) return -1;
        switch (number) {
        case 1: if (wire == 2) trace = payload; break;
        case 2: if (wire == 2) span_id = payload; break;
        case 4: if (wire == 2) parent = payload; break;
        case 5: if (wire == 2) name = payload; break;
        case 6: if (wire == 0) kind = v; break;
        case 7: if (wire == 1) start = v; break;
        case 8: if (wire == 1) end = v; break;
        case 15:
            if (wire == 2) { /* Status, merged when repeated: its code's last value wins */
                Reader sr = reader_of(payload);
                while (sr.p < sr.end) {
                    uint32_t inner;
                    int inner_wire;
                    uint64_t code = 0;
                    Slice ignored = {NULL, 0};
                    if (read_field(&sr, &inner, &inner_wire, &code, &ignored) < 0) return -1;
                    if (inner == 3 && inner_wire == 0) status_code = code;
                }
            }
            break;
        default:
            break;
        }
    }
    const char *problem = NULL;
    if (trace.size != 16 || all_zero(trace)) problem = "invalid trace_id";
    else if (span_id.size != 8 || all_zero(span_id)) problem = "invalid span_id";
    else if (parent.size && parent.size != 8) problem = "invalid parent_span_id";
    else if (end && end < start) problem = "ends before it starts";
    else if (start > MAX_TIME_NS || end > MAX_TIME_NS) problem = "time past year 2262";
    if (problem != NULL) {
        out->rejected++;
        if (out->reason == NULL) out->reason = problem;
        return 0;
    }
    PyObject *trace_hex = hex_of(trace), *span_hex = NULL, *parent_hex = NULL, *name_text = NULL;
    PyObject *row = NULL;
    int result = -1;
    if (trace_hex == NULL) goto done;
    if ((span_hex = hex_of(span_id)) == NULL) goto done;
    if (parent.size) {
        if ((parent_hex = hex_of(parent)) == NULL) goto done;
    } else {
        parent_hex = Py_NewRef(Py_None);
    }
    if ((name_text = text_of(name)) == NULL) goto done;
    row = Py_BuildValue(
        "(OOOOOiKKiOOy#)", trace_hex, span_hex, parent_hex, service, name_text, (int)(int32_t)kind,
        (unsigned long long)start, (unsigned long long)(end ? end : start), (int)(int32_t)status_code,
        resource_id, scope, (const char *)s.data, s.size);
    if (row == NULL || PyList_Append(out->span_rows, row) < 0) goto done;
    Py_ssize_t indexed_count = PyTuple_GET_SIZE(out->indexed);
    r = reader_of(s);
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) goto done;
        if (wire != 2) continue;
        if (number == 9) {
            Slice key;
            Pieces value;
            if (key_value(payload, &key, &value) < 0) goto done;
            for (Py_ssize_t k = 0; k < indexed_count; k++) {
                PyObject *pair = PyTuple_GET_ITEM(out->indexed, k);
                if (!key_is(key, PyTuple_GET_ITEM(pair, 0))) continue;
                PyObject *text = indexed_text(&value);
                if (text == NULL) goto done;
                if (text != Py_None && PyUnicode_GET_LENGTH(text) <= out->max_value) {
                    PyObject *entry = PyTuple_Pack(3, PyTuple_GET_ITEM(pair, 1), text, trace_hex);
                    if (entry == NULL || PySet_Add(out->attribute_rows, entry) < 0) {
                        Py_XDECREF(entry);
                        Py_DECREF(text);
                        goto done;
                    }
                    Py_DECREF(entry);
                }
                Py_DECREF(text);
                break;
            }
        } else if (number == 13) {
            Slice linked_trace = {payload.data, 0}, linked_span = {payload.data, 0};
            Reader lr = reader_of(payload);
            while (lr.p < lr.end) {
                uint32_t inner;
                int inner_wire;
                uint64_t ignored = 0;
                Slice field = {NULL, 0};
                if (read_field(&lr, &inner, &inner_wire, &ignored, &field) < 0) goto done;
                if (inner == 1 && inner_wire == 2) linked_trace = field;
                else if (inner == 2 && inner_wire == 2) linked_span = field;
            }
            PyObject *linked_trace_hex = hex_of(linked_trace);
            PyObject *linked_span_hex = linked_trace_hex ? hex_of(linked_span) : NULL;
            PyObject *link =
                linked_span_hex ? PyTuple_Pack(4, trace_hex, span_hex, linked_trace_hex, linked_span_hex) : NULL;
            Py_XDECREF(linked_trace_hex);
            Py_XDECREF(linked_span_hex);
            if (link == NULL || PyList_Append(out->link_rows, link) < 0) {
                Py_XDECREF(link);
                goto done;
            }
            Py_DECREF(link);
        }
    }
    out->accepted++;
    result = 0;
done:
    Py_XDECREF(trace_hex);
    Py_XDECREF(span_hex);
    Py_XDECREF(parent_hex);
    Py_XDECREF(name_text);
    Py_XDECREF(row);
    return result;
}

static int scope_spans(Out *out, Slice s, PyObject *service, PyObject *resource_id) {
    Pieces scope = {{{NULL, 0}}, 0};
    Reader r = reader_of(s);
    while (r.p < r.end) { /* the scope first: it may come after the spans */
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) return -1;
        if (number == 1 && wire == 2 && add_piece(&scope, payload) < 0) return -1;
    }
    Slice name = {s.data, 0};
    for (int i = 0; i < scope.count; i++) {
        Reader sr = reader_of(scope.parts[i]);
        while (sr.p < sr.end) {
            uint32_t number;
            int wire;
            uint64_t v = 0;
            Slice payload = {NULL, 0};
            if (read_field(&sr, &number, &wire, &v, &payload) < 0) return -1;
            if (number == 1 && wire == 2) name = payload;
        }
    }
    PyObject *scope_name = text_of(name);
    if (scope_name == NULL) return -1;
    r = reader_of(s);
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0 ||
            (number == 2 && wire == 2 && span(out, payload, service, resource_id, scope_name) < 0)) {
            Py_DECREF(scope_name);
            return -1;
        }
    }
    Py_DECREF(scope_name);
    return 0;
}

static int resource_spans(Out *out, Slice s, PyObject *resource_id_of) {
    Pieces resource = {{{NULL, 0}}, 0};
    Reader r = reader_of(s);
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) return -1;
        if (number == 1 && wire == 2 && add_piece(&resource, payload) < 0) return -1;
    }
    PyObject *service = PyUnicode_FromString("unknown_service");
    PyObject *body = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *resource_id = NULL, *pair = NULL;
    int result = -1;
    if (service == NULL || body == NULL) goto done;
    for (int i = 0; i < resource.count; i++) {
        PyObject *part = PyBytes_FromStringAndSize((const char *)resource.parts[i].data, resource.parts[i].size);
        if (part == NULL) goto done;
        PyBytes_ConcatAndDel(&body, part); /* merged occurrences: their bytes one after another */
        if (body == NULL) goto done;
        Reader rr = reader_of(resource.parts[i]);
        while (rr.p < rr.end) {
            uint32_t number;
            int wire;
            uint64_t v = 0;
            Slice payload = {NULL, 0};
            if (read_field(&rr, &number, &wire, &v, &payload) < 0) goto done;
            if (number != 1 || wire != 2) continue;
            Slice key;
            Pieces value;
            if (key_value(payload, &key, &value) < 0) goto done;
            if (key.size != 12 || memcmp(key.data, "service.name", 12) != 0) continue;
            PyObject *name = string_value(&value);
            if (name == NULL) goto done;
            if (PyUnicode_GET_LENGTH(name)) {
                Py_SETREF(service, name);
            } else {
                Py_DECREF(name);
            }
        }
    }
    pair = PyObject_CallOneArg(resource_id_of, body);
    if (pair == NULL) goto done;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "resource_id_of must return (id, body)");
        goto done;
    }
    resource_id = PyTuple_GET_ITEM(pair, 0);
    if (PyDict_SetItem(out->resource_rows, resource_id, PyTuple_GET_ITEM(pair, 1)) < 0) goto done;
    r = reader_of(s);
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) goto done;
        if (number == 2 && wire == 2 && scope_spans(out, payload, service, resource_id) < 0) goto done;
    }
    result = 0;
done:
    Py_XDECREF(service);
    Py_XDECREF(body);
    Py_XDECREF(pair);
    return result;
}

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer body;
    PyObject *indexed, *resource_id_of;
    Py_ssize_t max_value;
    if (!PyArg_ParseTuple(args, "y*O!nO", &body, &PyTuple_Type, &indexed, &max_value, &resource_id_of)) return NULL;
    Out out = {PyList_New(0), PySet_New(NULL), PyList_New(0), PyDict_New(), indexed, max_value, 0, 0, NULL};
    PyObject *result = NULL;
    if (!out.span_rows || !out.attribute_rows || !out.link_rows || !out.resource_rows) goto done;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(indexed); k++) {
        PyObject *pair = PyTuple_GET_ITEM(indexed, k);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0))) {
            PyErr_SetString(PyExc_TypeError, "indexed must hold (bytes, str) pairs");
            goto done;
        }
    }
    Slice whole = {(const unsigned char *)body.buf, body.len};
    Reader r = reader_of(whole);
    while (r.p < r.end) {
        uint32_t number;
        int wire;
        uint64_t v = 0;
        Slice payload = {NULL, 0};
        if (read_field(&r, &number, &wire, &v, &payload) < 0) goto done;
        if (number == 1 && wire == 2 && resource_spans(&out, payload, resource_id_of) < 0) goto done;
    }
    result = Py_BuildValue(
        "(OOOOnns)", out.span_rows, out.attribute_rows, out.link_rows, out.resource_rows, out.accepted,
        out.rejected, out.reason ? out.reason : "");
done:
    PyBuffer_Release(&body);
    Py_XDECREF(out.span_rows);
    Py_XDECREF(out.attribute_rows);
    Py_XDECREF(out.link_rows);
    Py_XDECREF(out.resource_rows);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(body, indexed, max_value, resource_id_of) -> (span_rows, attribute_rows, link_rows, "
     "resource_rows, accepted, rejected, reason)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_span_scan", NULL, -1, methods};

PyMODINIT_FUNC PyInit__span_scan(void) {
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) {
        PyErr_SetString(PyExc_ImportError, "the span scanner reads little-endian fixed64 fields");
        return NULL;
    }
    return PyModule_Create(&module);
}
