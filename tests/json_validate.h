/*
 * json_validate.h: a small JSON-schema validator for tests, covering the subset that
 * sample_json_schema_to_gbnf converts (type and type lists, properties / required /
 * additionalProperties, enum, const, items / prefixItems / minItems / maxItems, minimum /
 * maximum / exclusiveMinimum / exclusiveMaximum, minLength / maxLength, pattern (PCRE2,
 * unanchored search as the spec says), format (date, time, date-time, uuid, email, uri),
 * anyOf / oneOf / allOf, $ref into the root). Written independently of the converter so
 * that tests check the grammar against the schema, not against itself. Not a full
 * validator: unknown keywords are ignored.
 */
#ifndef DK_TEST_JSON_VALIDATE_H
#define DK_TEST_JSON_VALIDATE_H

#include <stddef.h>

#include <jansson.h>

/* 1 when instance is valid under schema (root: the document $refs resolve against; NULL
 * means schema itself), 0 otherwise with the reason in why[0..why_size). */
int json_validate(const json_t *instance, const json_t *schema, const json_t *root, char *why, size_t why_size);

#endif
