/* `scripted` in C: a subset of the Rust test plugin `tests/test-plugins/scripted`, to show the
 * pipeline rules hold for a C guest too.
 *
 * Same trace as the Rust plugin: every hook appends `<tag>.<hook>` to the context value `trace`,
 * and the post-hook writes the whole trace into the outcome (a response's body field `trace`, an
 * error's code `trace:<trace>`). Config (strings; unknown fields and actions rejected):
 *
 * | field       | values                                                     |
 * |-------------|------------------------------------------------------------|
 * | `tag`       | (required) names the plugin in the trace                   |
 * | `transport` | `pass`, `error`                                            |
 * | `pre`       | `continue`, `respond`, `fail`, `fail-no-fallbacks`, `error` |
 * | `post`      | `pass`, `keep`, `to-error`, `error`, `annotate`            |
 *
 * `annotate` sets the body field `annotated_by: <tag>` through the lent outcome
 * (wg_outcome_set_extra) and `typed_refused: true` when setting `model` that way was refused, then
 * hands the outcome on unchanged; on an error outcome it fails with `annotate refused: <why>`.
 */
#include "wasmgate.h"

enum { TAG, TRANSPORT, PRE, POST, FIELDS };
static const char *const names[FIELDS] = {"tag", "transport", "pre", "post"};
static char config[FIELDS][128] = {"", "pass", "continue", "pass"};

void exports_plugin_get_name(plugin_string_t *ret) { *ret = wg_dup("scripted"); }

plugin_hooks_t exports_plugin_hooks(void) {
  return WASMGATE_PLUGIN_TYPES_HOOKS_TRANSPORT_INTERCEPTOR | WASMGATE_PLUGIN_TYPES_HOOKS_PRE_HOOK |
         WASMGATE_PLUGIN_TYPES_HOOKS_POST_HOOK;
}

/* Whether `value` is one of the NULL-terminated `allowed`. */
static bool one_of(const char *value, const char *const *allowed) {
  for (; *allowed; allowed++)
    if (strcmp(value, *allowed) == 0) return true;
  return false;
}

bool exports_plugin_init(plugin_string_t *text, plugin_string_t *err) {
  static const char *const transport[] = {"pass", "error", 0};
  static const char *const pre[] = {"continue", "pass", "respond", "fail", "fail-no-fallbacks", "error", 0};
  static const char *const post[] = {"pass", "keep", "to-error", "error", "annotate", 0};
  bool ok = wg_config_strings(text, names, config, FIELDS, err);
  plugin_string_free(text);
  if (!ok) return false;
  if (!config[TAG][0]) return wg_fail(err, "invalid config: missing field `tag`");
  const char *const *allowed[] = {0, transport, pre, post};
  for (int i = TRANSPORT; i < FIELDS; i++) {
    if (!one_of(config[i], allowed[i]))
      return wg_fail(err, "invalid config: %s: unknown action \"%s\"", names[i], config[i]);
  }
  wg_kv_incr("inits", 1);
  return true;
}

/* Appends `<tag>.<hook>` to the context's trace; leaves the new trace in `trace`. */
static void trace_hook(const char *hook, char *trace, size_t size) {
  char before[1024];
  wg_ctx_get("trace", before, sizeof before);
  plugin_string_t t = wg_fmt(before[0] ? "%s,%s.%s" : "%s%s.%s", before, config[TAG], hook);
  wg_cstr(&t, trace, size);
  plugin_string_free(&t);
  wg_ctx_set("trace", trace);
}

bool exports_plugin_transport_interceptor(plugin_http_request_t *req,
                                          plugin_transport_outcome_t *ret, plugin_string_t *err) {
  char trace[1024];
  trace_hook("transport", trace, sizeof trace);
  plugin_http_request_free(req);
  if (strcmp(config[TRANSPORT], "error") == 0) return wg_fail(err, "error from %s", config[TAG]);
  ret->tag = WASMGATE_PLUGIN_TYPES_TRANSPORT_OUTCOME_PASS;
  return true;
}

bool exports_plugin_pre_hook(plugin_borrow_request_t lent, plugin_pre_outcome_t *ret,
                             plugin_string_t *err) {
  char trace[1024];
  wg_request_t whole, *req = &whole;
  wg_request_get(lent, &whole);
  const char *pre = config[PRE], *tag = config[TAG];
  trace_hook("pre", trace, sizeof trace);
  if (strcmp(pre, "continue") == 0) {
    ret->tag = WASMGATE_PLUGIN_TYPES_PRE_OUTCOME_CONTINUE;
    ret->val.continue_ = *req;
    return true;
  }
  if (strcmp(pre, "pass") == 0) {
    wg_request_free(req);
    ret->tag = WASMGATE_PLUGIN_TYPES_PRE_OUTCOME_PASS;
    return true;
  }
  if (strcmp(pre, "respond") == 0) {
    wg_response_t *r = &ret->val.respond;
    memset(r, 0, sizeof *r);
    ret->tag = WASMGATE_PLUGIN_TYPES_PRE_OUTCOME_RESPOND;
    r->id = wg_dup("chatcmpl-scripted-c");
    r->provider = req->provider; /* moved out of the request */
    r->model = req->model;
    req->provider.ptr = req->model.ptr = NULL;
    req->provider.len = req->model.len = 0;
    r->created = wasmgate_plugin_clock_now_ms() / 1000;
    r->extra = wg_dup("{}");
    r->choices.len = 1;
    r->choices.ptr = calloc(1, sizeof *r->choices.ptr);
    r->choices.ptr->message.role = wg_dup("assistant");
    r->choices.ptr->message.content.is_some = true;
    r->choices.ptr->message.content.val = wg_fmt("responded by %s", tag);
    wg_some(&r->choices.ptr->finish_reason, "stop");
  } else if (strcmp(pre, "error") == 0) {
    wg_request_free(req);
    return wg_fail(err, "error from %s", tag);
  } else { /* fail, fail-no-fallbacks */
    bool forbid = strcmp(pre, "fail-no-fallbacks") == 0;
    ret->tag = WASMGATE_PLUGIN_TYPES_PRE_OUTCOME_FAIL;
    ret->val.fail = wg_error(forbid ? 403 : 503, wg_fmt("failed by %s", tag));
    wg_some(&ret->val.fail.kind, "server_error");
    if (forbid) {
      ret->val.fail.allow_fallbacks.is_some = true;
      ret->val.fail.allow_fallbacks.val = false;
    }
  }
  wg_request_free(req);
  return true;
}

/* `extra` (a JSON object) with its field "trace" set to `trace` (which holds no quotes). */
static plugin_string_t with_trace(const plugin_string_t *extra, const char *trace) {
  static char buf[8192];
  wg_cstr(extra, buf, sizeof buf - 2048);
  char *at = strstr(buf, "\"trace\":\"");
  if (at) { /* replace the old value */
    char *end = strchr(at + 9, '"');
    if (end) {
      char rest[2048];
      wg_cstr(&(plugin_string_t){(uint8_t *)end, strlen(end)}, rest, sizeof rest);
      at[9] = 0;
      return wg_fmt("%s%s%s", buf, trace, rest);
    }
  }
  char *close = strrchr(buf, '}');
  if (!close) return wg_fmt("{\"trace\":\"%s\"}", trace);
  *close = 0;
  bool empty = strchr(buf, ':') == NULL;
  return wg_fmt("%s%s\"trace\":\"%s\"}", buf, empty ? "" : ",", trace);
}

bool exports_plugin_post_hook(plugin_borrow_outcome_t lent, plugin_option_post_outcome_t *ret,
                              plugin_string_t *err) {
  char trace[1024];
  wg_outcome_t whole, *outcome = &whole;
  wg_outcome_get(lent, &whole);
  const char *post = config[POST], *tag = config[TAG];
  trace_hook("post", trace, sizeof trace);
  if (strcmp(post, "annotate") == 0) {
    wg_outcome_free(outcome);
    char json[160], reason[512];
    plugin_string_t quoted = wg_fmt("\"%s\"", tag), why;
    wg_cstr(&quoted, json, sizeof json);
    plugin_string_free(&quoted);
    int typed_set = wg_outcome_set_extra(lent, "model", "\"not a typed field\"", NULL);
    if (!wg_outcome_set_extra(lent, "annotated_by", json, &why)) {
      wg_cstr(&why, reason, sizeof reason);
      plugin_string_free(&why);
      return wg_fail(err, "annotate refused: %s", reason);
    }
    wg_outcome_set_extra(lent, "typed_refused", typed_set ? "false" : "true", NULL);
    ret->is_some = false; /* handed on with the fields set, nothing copied back */
    return true;
  }
  if (strcmp(post, "keep") == 0) {
    wg_outcome_free(outcome);
    ret->is_some = false; /* handed on unchanged, the trace not written */
    return true;
  }
  if (strcmp(post, "error") == 0) {
    wg_outcome_free(outcome);
    return wg_fail(err, "error from %s", tag);
  }
  if (strcmp(post, "to-error") == 0 && outcome->tag == WASMGATE_PLUGIN_TYPES_POST_OUTCOME_RESPONSE) {
    wg_outcome_free(outcome);
    outcome->tag = WASMGATE_PLUGIN_TYPES_POST_OUTCOME_ERROR;
    outcome->val.error = wg_error(502, wg_fmt("converted by %s", tag));
  }
  if (outcome->tag == WASMGATE_PLUGIN_TYPES_POST_OUTCOME_RESPONSE) {
    plugin_string_t extra = with_trace(&outcome->val.response.extra, trace);
    plugin_string_free(&outcome->val.response.extra);
    outcome->val.response.extra = extra;
  } else {
    plugin_option_string_free(&outcome->val.error.code);
    outcome->val.error.code.is_some = true;
    outcome->val.error.code.val = wg_fmt("trace:%s", trace);
  }
  ret->is_some = true;
  ret->val = *outcome;
  return true;
}

bool exports_plugin_stream_chunk(plugin_stream_chunk_t *chunk, plugin_chunk_outcome_t *ret,
                                 plugin_string_t *err) {
  plugin_stream_chunk_free(chunk);
  ret->tag = WASMGATE_PLUGIN_TYPES_CHUNK_OUTCOME_PASS; /* on unchanged, nothing copied back */
  return true;
}

bool exports_plugin_on_error(plugin_gateway_error_t *error, plugin_option_gateway_error_t *ret,
                             plugin_string_t *err) {
  plugin_gateway_error_free(error);
  ret->is_some = false; /* handed on unchanged */
  return true;
}

bool exports_plugin_cleanup(plugin_string_t *err) {
  wg_kv_incr("cleanups", 1);
  return true;
}
