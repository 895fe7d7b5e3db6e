/* Helpers for wasmgate plugins written in C, on top of the bindings `wit-bindgen c` generates
 * for the `plugin` world of wit/plugin.wit (`plugin.h`).
 *
 * Ownership follows the generated bindings: an export owns its arguments (free what you do not
 * hand back) and returns values the bindings free after the call, so every string put into a
 * returned value must be heap-allocated (wg_dup, wg_fmt); an import only borrows its arguments
 * (wg_str is enough), and what it returns is yours to free.
 *
 * The pre-hook and post-hook are lent a handle (plugin_borrow_request_t,
 * plugin_borrow_outcome_t), read with the `exchange` imports: wg_request_get / wg_outcome_get
 * copy the whole value, wasmgate_plugin_exchange_method_request_model and its siblings one part;
 * wg_outcome_set_extra adds a field to the lent response without copying it.
 * The bindings must be generated with `wit-bindgen c --autodrop-borrows yes` (the gateway's
 * build does), so the handle is released after the hook returns.
 *
 * Formatting: wg_fmt, wg_log and wg_fail take printf-style formats with %s, %d, %u and %% only
 * (wasi-libc's printf family would pull in its stdio, and with it WASI imports and ~10 KB).
 *
 * Config: wg_config_strings parses the flat JSON objects of strings the C examples take, with
 * the same error messages as the other SDKs ("invalid config: <field>: ...").
 *
 * Memory: compile wasmgate_alloc.c (next to this header) with your plugin: its malloc, calloc,
 * realloc and free replace wasi-libc's dlmalloc, which is most of a C component's size. */
#ifndef WASMGATE_H
#define WASMGATE_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "plugin.h"

typedef wasmgate_plugin_types_chat_request_t wg_request_t;
typedef wasmgate_plugin_types_chat_response_t wg_response_t;
typedef wasmgate_plugin_types_gateway_error_t wg_error_t;
typedef wasmgate_plugin_types_post_outcome_t wg_outcome_t;

/* A copy of the whole lent request into `out` (free it with wg_request_free). */
static inline void wg_request_get(plugin_borrow_request_t req, wg_request_t *out) {
  wasmgate_plugin_exchange_method_request_get(req, out);
}

static inline void wg_request_free(wg_request_t *req) {
  wasmgate_plugin_types_chat_request_free(req);
}

/* A copy of the whole lent outcome into `out` (free it with wg_outcome_free). */
static inline void wg_outcome_get(plugin_borrow_outcome_t outcome, wg_outcome_t *out) {
  wasmgate_plugin_exchange_method_outcome_get(outcome, out);
}

static inline void wg_outcome_free(wg_outcome_t *outcome) {
  wasmgate_plugin_types_post_outcome_free(outcome);
}

/* Sets top-level field `name` of the lent response's body to the JSON text `json` without
 * copying the response (`outcome.set-extra`): the field is set on whatever response the hook
 * hands on. Returns 1 when set; 0 when refused (an error outcome, a typed field, text that is
 * not JSON, past the output limit), with the reason in `*why` when `why` is not NULL (free it
 * with plugin_string_free). */
static inline int wg_outcome_set_extra(plugin_borrow_outcome_t outcome, const char *name,
                                       const char *json, plugin_string_t *why) {
  plugin_string_t n = {(uint8_t *)name, strlen(name)}, v = {(uint8_t *)json, strlen(json)};
  plugin_string_t err = {0};
  if (wasmgate_plugin_exchange_method_outcome_set_extra(outcome, &n, &v, &err)) return 1;
  if (why) *why = err;
  else plugin_string_free(&err);
  return 0;
}

/* A borrowed string view of a C string (for import arguments). */
static inline plugin_string_t wg_str(const char *s) {
  plugin_string_t out = {(uint8_t *)s, strlen(s)};
  return out;
}

/* An owned copy of a C string (for returned values). */
static inline plugin_string_t wg_dup(const char *s) {
  plugin_string_t out;
  plugin_string_dup(&out, s);
  return out;
}

/* Formats `fmt` (%s, %d, %u, %%) into `buf` of `size` bytes, truncating; returns `buf`. */
static inline char *wg_vformat(char *buf, size_t size, const char *fmt, va_list args) {
  size_t n = 0;
#define WG_PUT(c) do { if (n + 1 < size) buf[n++] = (c); } while (0)
  for (const char *f = fmt; *f; f++) {
    if (*f != '%' || !f[1]) { WG_PUT(*f); continue; }
    char spec = *++f, digits[24];
    int len = 0;
    if (spec == 's') {
      for (const char *s = va_arg(args, const char *); *s; s++) WG_PUT(*s);
    } else if (spec == 'd' || spec == 'u') {
      long long v = spec == 'd' ? (long long)va_arg(args, int) : (long long)va_arg(args, unsigned);
      unsigned long long u = v < 0 ? (unsigned long long)(-v) : (unsigned long long)v;
      do { digits[len++] = (char)('0' + u % 10); u /= 10; } while (u);
      if (v < 0) WG_PUT('-');
      while (len) WG_PUT(digits[--len]);
    } else {
      WG_PUT(spec);
    }
  }
#undef WG_PUT
  buf[n] = 0;
  return buf;
}

/* An owned string formatted printf-style (truncated at 1 KiB). */
static inline plugin_string_t wg_fmt(const char *fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  wg_vformat(buf, sizeof buf, fmt, args);
  va_end(args);
  return wg_dup(buf);
}

/* Whether `s` equals the C string `c`. */
static inline bool wg_eq(const plugin_string_t *s, const char *c) {
  size_t n = strlen(c);
  return s->len == n && memcmp(s->ptr, c, n) == 0;
}

/* Copies `s` into `buf` (of `size` bytes) as a NUL-terminated C string, truncating. */
static inline const char *wg_cstr(const plugin_string_t *s, char *buf, size_t size) {
  size_t n = s->len < size - 1 ? s->len : size - 1;
  memcpy(buf, s->ptr, n);
  buf[n] = 0;
  return buf;
}

/* Writes a printf-style line to the gateway's log at `level` (WASMGATE_PLUGIN_LOGGING_LEVEL_*). */
static inline void wg_log(wasmgate_plugin_logging_level_t level, const char *fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  wg_vformat(buf, sizeof buf, fmt, args);
  va_end(args);
  plugin_string_t message = wg_str(buf);
  wasmgate_plugin_logging_log(level, &message);
}

/* Sets the hook's error (a plugin failure) and returns false, for `return wg_fail(err, ...)`. */
static inline bool wg_fail(plugin_string_t *err, const char *fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  wg_vformat(buf, sizeof buf, fmt, args);
  va_end(args);
  *err = wg_dup(buf);
  return false;
}

/* A gateway error with an HTTP status and a message; no kind or code, fallbacks allowed. */
static inline wg_error_t wg_error(uint16_t status, plugin_string_t message) {
  wg_error_t e;
  memset(&e, 0, sizeof e);
  e.status = status;
  e.message = message;
  return e;
}

/* Sets an option<string> to an owned copy of `s`. */
static inline void wg_some(plugin_option_string_t *opt, const char *s) {
  opt->is_some = true;
  opt->val = wg_dup(s);
}

/* The request id into `buf`. */
static inline const char *wg_request_id(char *buf, size_t size) {
  plugin_string_t id;
  wasmgate_plugin_context_request_id(&id);
  wg_cstr(&id, buf, size);
  plugin_string_free(&id);
  return buf;
}

/* The context value under `key` into `buf` (empty when absent). */
static inline const char *wg_ctx_get(const char *key, char *buf, size_t size) {
  plugin_string_t k = wg_str(key), value;
  buf[0] = 0;
  if (wasmgate_plugin_context_get(&k, &value)) {
    wg_cstr(&value, buf, size);
    plugin_string_free(&value);
  }
  return buf;
}

/* Stores a context value for the rest of the request. */
static inline void wg_ctx_set(const char *key, const char *value) {
  plugin_string_t k = wg_str(key), v = wg_str(value);
  wasmgate_plugin_context_set(&k, &v);
}

/* Atomically adds `delta` to the integer under `key` in the plugin's kv namespace. */
static inline int64_t wg_kv_incr(const char *key, int64_t delta) {
  plugin_string_t k = wg_str(key);
  return wasmgate_plugin_kv_incr(&k, delta, NULL);
}

/* Parses a JSON object whose values are all strings into `values` (NUL-terminated copies of at
 * most `size` bytes, left untouched for absent fields), accepting only the `n` field names in
 * `names`. On a bad config sets `*err` to a message naming the field and returns false. */
static inline bool wg_config_strings(const plugin_string_t *config, const char *const *names,
                                     char (*values)[128], size_t n, plugin_string_t *err) {
  const char *p = (const char *)config->ptr, *end = p + config->len;
#define WG_SKIP_WS() while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r')) p++
  char key[128], value[128];
  WG_SKIP_WS();
  if (p == end) return true; /* an empty config is {} */
  if (*p++ != '{') return wg_fail(err, "invalid config: expected a JSON object");
  WG_SKIP_WS();
  if (p < end && *p == '}') return true;
  for (;;) {
    char *bufs[2] = {key, value};
    for (int which = 0; which < 2; which++) {
      WG_SKIP_WS();
      if (p >= end || *p != '"') {
        return which ? wg_fail(err, "invalid config: %s: expected a string", key)
                     : wg_fail(err, "invalid config: expected a field name");
      }
      size_t len = 0;
      for (p++; p < end && *p != '"'; p++) {
        char c = *p;
        if (c == '\\' && p + 1 < end) {
          c = *++p;
          c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        }
        if (len < sizeof key - 1) bufs[which][len++] = c;
      }
      if (p++ >= end) return wg_fail(err, "invalid config: unterminated string");
      bufs[which][len] = 0;
      WG_SKIP_WS();
      if (which == 0 && (p >= end || *p++ != ':')) return wg_fail(err, "invalid config: expected ':'");
    }
    size_t i = 0;
    while (i < n && strcmp(names[i], key) != 0) i++;
    if (i == n) return wg_fail(err, "invalid config: unknown field `%s`", key);
    memcpy(values[i], value, sizeof value);
    WG_SKIP_WS();
    if (p < end && *p == ',') { p++; continue; }
    if (p < end && *p == '}') return true;
    return wg_fail(err, "invalid config: expected ',' or '}' after `%s`", key);
  }
#undef WG_SKIP_WS
}

#endif
