/*
 * convert_quantize: re-quantize a GGUF model to another type (or a llama.cpp-style mix).
 * Metadata is copied as is except general.file_type; each tensor is streamed through the
 * writer's fill callback (dequantize row, quantize row), so memory stays at one mapping of
 * the input plus the writer's buffers. 1-D tensors are written F32.
 */
#include "convert/convert_internal.h"

#include <string.h>
#include <unistd.h>

int convert_threads(int n)
{
    if (n > 0) return n > 64 ? 64 : n;
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    if (c < 1) c = 1;
    return c > 16 ? 16 : (int)c;
}

int convert_quantize(const char *in_path, const char *out_path, const char *type_name,
                     int n_threads, FILE *log, char *err)
{
    enum gguf_tensor_type base;
    int ftype = convert_ftype_from_name(type_name, &base);
    if (ftype < 0) return dk_fail(err, DK_ERR_ARG, "quantize: unknown type '%s'", type_name ? type_name : "");
    gguf_file *in = NULL;
    int rc = gguf_open(&in, in_path, err);
    if (rc != DK_OK) return rc;
    gguf_writer *w = gguf_writer_new();
    int64_t nt = gguf_n_tensors(in);
    convert_fill *fills = dk_calloc(nt > 0 ? (size_t)nt : 1, sizeof *fills);
    kern_pool *pool = kern_pool_new(convert_threads(n_threads));
    if (!w || !fills || !pool) { rc = dk_fail(err, DK_ERR_NOMEM, "quantize: out of memory"); goto done; }

    for (int64_t i = 0; i < gguf_n_kv(in); i++) {
        if (strcmp(gguf_kv_key(in, i), "general.file_type") == 0) continue;
        if ((rc = gguf_writer_copy_kv(w, in, i)) != DK_OK) { dk_fail(err, rc, "quantize: cannot copy key %s", gguf_kv_key(in, i)); goto done; }
    }
    if ((rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ftype)) != DK_OK) {
        dk_fail(err, rc, "quantize: cannot set general.file_type");
        goto done;
    }
    uint32_t n_layers = 0;
    int n_fallback = 0;
    bool has_output = gguf_find_tensor(in, "output.weight") != NULL;
    gguf_str arch;
    if (gguf_get_str(in, "general.architecture", &arch) == DK_OK && arch.len < 64) {
        char key[96];
        snprintf(key, sizeof key, "%.*s.block_count", (int)arch.len, arch.ptr);
        gguf_get_u32(in, key, &n_layers);
    }
    for (int64_t i = 0; i < nt; i++) {
        const gguf_tensor *t = gguf_get_tensor(in, i);
        bool fb = false;
        enum gguf_tensor_type ty = convert_pick_type(type_name, t->name, t->n_dims, t->ne[0], (int)n_layers, has_output, &fb);
        if (fb) n_fallback++;
        if (fb && log && n_fallback <= 3) fprintf(log, "quantize: %s has rows of %lld values, not a multiple of %s's block; using %s\n",
                               t->name, (long long)t->ne[0], gguf_type_name(base), gguf_type_name(ty));
        convert_fill *f = &fills[i];
        if ((rc = convert_fill_init(f, ty, t->ne, t->n_dims, err)) != DK_OK) goto done;
        f->src = t;
        if (t->ne[0] > 0 && gguf_row_bytes(t->type, t->ne[0], &f->src_row_bytes) != DK_OK) {
            rc = dk_fail(err, DK_ERR_FORMAT, "quantize: bad source tensor %s", t->name);
            goto done;
        }
        f->pool = pool;
        f->log = log;
        rc = gguf_writer_add_tensor_fill(w, t->name, ty, t->n_dims, t->ne, convert_fill_fn, f);
        if (rc != DK_OK) { dk_fail(err, rc, "quantize: cannot add tensor %s", t->name); goto done; }
    }
    if (n_fallback > 3 && log) fprintf(log, "quantize: %d tensors in all use a fallback type\n", n_fallback);
    rc = gguf_writer_write(w, out_path, err);
done:
    kern_pool_free(pool);
    dk_free(fills);
    gguf_writer_free(w);
    gguf_close(in);
    return rc;
}
