/* `hello-world` in C: the smallest plugin that takes part in every hook, and logs each call.
 *
 * The same plugin as the Rust `example-plugins/hello-world`: each hook logs one line at info
 * level with the request id (and, for the pre- and post-hook, the provider and model), then
 * leaves the request unchanged. The stream-chunk hook logs the first and the last chunk of a
 * stream; the error stage logs the final error's status.
 *
 * Config (all optional, unknown fields rejected):
 *
 * | field      | type   | default   | meaning                      |
 * |------------|--------|-----------|------------------------------|
 * | `greeting` | string | `"hello"` | first word of every log line |
 */
#include "wasmgate.h"

#define INFO WASMGATE_PLUGIN_LOGGING_LEVEL_INFO

static char greeting[1][128] = {"hello"};

void exports_plugin_get_name(plugin_string_t *ret) { *ret = wg_dup("hello-world"); }

plugin_hooks_t exports_plugin_hooks(void) {
  return WASMGATE_PLUGIN_TYPES_HOOKS_TRANSPORT_INTERCEPTOR | WASMGATE_PLUGIN_TYPES_HOOKS_PRE_HOOK |
         WASMGATE_PLUGIN_TYPES_HOOKS_POST_HOOK | WASMGATE_PLUGIN_TYPES_HOOKS_STREAM_CHUNK |
         WASMGATE_PLUGIN_TYPES_HOOKS_ON_ERROR | WASMGATE_PLUGIN_TYPES_HOOKS_CLEANUP |
         // Nothing about a request is kept in memory (only the configured greeting): any
         // instance may serve any call.
         WASMGATE_PLUGIN_TYPES_HOOKS_SHARED_INSTANCES;
}

bool exports_plugin_init(plugin_string_t *config, plugin_string_t *err) {
  static const char *const fields[] = {"greeting"};
  bool ok = wg_config_strings(config, fields, greeting, 1, err);
  plugin_string_free(config);
  if (ok) wg_log(INFO, "%s from init", greeting[0]);
  return ok;
}

bool exports_plugin_transport_interceptor(plugin_http_request_t *req,
                                          plugin_transport_outcome_t *ret, plugin_string_t *err) {
  char id[64], method[16], path[256];
  wg_log(INFO, "%s from transport: request %s, %s %s", greeting[0], wg_request_id(id, sizeof id),
         wg_cstr(&req->method, method, sizeof method), wg_cstr(&req->path, path, sizeof path));
  plugin_http_request_free(req);
  ret->tag = WASMGATE_PLUGIN_TYPES_TRANSPORT_OUTCOME_PASS;
  return true;
}

bool exports_plugin_pre_hook(plugin_borrow_request_t req, plugin_pre_outcome_t *ret,
                             plugin_string_t *err) {
  char id[64], provider[64], model[128];
  plugin_string_t p, m; /* only the two parts read are copied */
  wasmgate_plugin_exchange_method_request_provider(req, &p);
  wasmgate_plugin_exchange_method_request_model(req, &m);
  wg_log(INFO, "%s from pre-hook: request %s, %s/%s", greeting[0], wg_request_id(id, sizeof id),
         wg_cstr(&p, provider, sizeof provider), wg_cstr(&m, model, sizeof model));
  plugin_string_free(&p);
  plugin_string_free(&m);
  ret->tag = WASMGATE_PLUGIN_TYPES_PRE_OUTCOME_PASS; /* unchanged: nothing is copied back */
  return true;
}

bool exports_plugin_post_hook(plugin_borrow_outcome_t lent, plugin_option_post_outcome_t *ret,
                              plugin_string_t *err) {
  char id[64], a[128], b[256];
  wg_outcome_t whole, *outcome = &whole;
  wg_outcome_get(lent, &whole);
  wg_request_id(id, sizeof id);
  if (outcome->tag == WASMGATE_PLUGIN_TYPES_POST_OUTCOME_RESPONSE) {
    wg_log(INFO, "%s from post-hook: request %s, response from %s/%s", greeting[0], id,
           wg_cstr(&outcome->val.response.provider, a, sizeof a),
           wg_cstr(&outcome->val.response.model, b, sizeof b));
  } else {
    wg_log(INFO, "%s from post-hook: request %s, error %u: %s", greeting[0], id,
           outcome->val.error.status, wg_cstr(&outcome->val.error.message, b, sizeof b));
  }
  wg_outcome_free(outcome);
  ret->is_some = false; /* unchanged: nothing is copied back */
  return true;
}

bool exports_plugin_stream_chunk(plugin_stream_chunk_t *chunk, plugin_chunk_outcome_t *ret,
                                 plugin_string_t *err) {
  char id[64], reason[32];
  /* Once per stream, not per chunk: streams can have hundreds. */
  if (chunk->index == 0) {
    wg_log(INFO, "%s from stream-chunk: request %s, first chunk", greeting[0],
           wg_request_id(id, sizeof id));
  }
  if (chunk->finish_reason.is_some) {
    wg_log(INFO, "%s from stream-chunk: request %s, chunk %u ends the stream (%s)", greeting[0],
           wg_request_id(id, sizeof id), chunk->index,
           wg_cstr(&chunk->finish_reason.val, reason, sizeof reason));
  }
  plugin_stream_chunk_free(chunk);
  ret->tag = WASMGATE_PLUGIN_TYPES_CHUNK_OUTCOME_PASS; /* unchanged: nothing is copied back */
  return true;
}

bool exports_plugin_on_error(plugin_gateway_error_t *error, plugin_option_gateway_error_t *ret,
                             plugin_string_t *err) {
  char id[64];
  wg_log(INFO, "%s from on-error: request %s ends in error %u", greeting[0],
         wg_request_id(id, sizeof id), error->status);
  plugin_gateway_error_free(error);
  ret->is_some = false; /* unchanged: nothing is copied back */
  return true;
}

bool exports_plugin_cleanup(plugin_string_t *err) {
  wg_log(INFO, "%s from cleanup", greeting[0]);
  return true;
}
