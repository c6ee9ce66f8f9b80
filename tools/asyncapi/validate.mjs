// Validates an AsyncAPI 3.0 document with the official parser (@asyncapi/parser v3: the
// AsyncAPI JSON Schema of the spec and bindings, plus its Spectral rules).
//
//   node validate.mjs [FILE]      (default: ../../docs/asyncapi.yaml)
//
// Prints every diagnostic; exits 1 if any has severity error, or if the document is not
// AsyncAPI 3.0.0; exits 2 if the file cannot be read.
//
// The parser's v3 rules do not check message examples, so this script adds two checks of its
// own, reported as errors: every schema of components.schemas compiles as JSON Schema
// draft-07 (Ajv), and every message example's payload and headers validate against the
// message's payload and headers schemas.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Parser, DiagnosticSeverity } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = path.resolve(process.argv[2] ?? path.join(here, '..', '..', 'docs', 'asyncapi.yaml'));

let source;
try {
  source = await readFile(file, 'utf8');
} catch (e) {
  console.error(`error: cannot read ${file}: ${e.message}`);
  process.exit(2);
}

const names = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const parser = new Parser();
const { document, diagnostics } = await parser.parse(source, { source: file });

const rel = path.relative(process.cwd(), file) || file;
let errors = 0;
for (const d of diagnostics) {
  const severity = names[d.severity] ?? String(d.severity);
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  const line = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : '-';
  const at = d.path && d.path.length ? ` at ${d.path.join('.')}` : '';
  console.log(`${rel}:${line} ${severity} [${d.code}] ${d.message}${at}`);
}

if (document !== undefined) {
  // Draft-07 (Ajv's default dialect); unknown keywords such as the parser's
  // x-parser-schema-id are ignored, unknown formats are errors.
  const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  const fail = (where, message) => {
    errors += 1;
    console.log(`${rel}: error [draft-07] ${message} at ${where}`);
  };
  const compile = (where, schema) => {
    try {
      return ajv.compile(schema);
    } catch (e) {
      fail(where, `does not compile as JSON Schema draft-07: ${e.message}`);
      return undefined;
    }
  };
  const explain = (validate) =>
    validate.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
  for (const schema of document.components().schemas()) {
    compile(`components.schemas.${schema.id()}`, schema.json());
  }
  for (const message of document.components().messages()) {
    const where = `components.messages.${message.id()}`;
    const payload = message.hasPayload() ? compile(`${where}.payload`, message.payload().json()) : undefined;
    const headers = message.hasHeaders() ? compile(`${where}.headers`, message.headers().json()) : undefined;
    message.examples().forEach((example, i) => {
      const at = `${where}.examples.${i} (${example.name() ?? 'unnamed'})`;
      if (example.hasPayload() && payload && !payload(example.payload())) {
        fail(at, `payload does not match the payload schema: ${explain(payload)}`);
      }
      if (example.hasHeaders() && headers && !headers(example.headers())) {
        fail(at, `headers do not match the headers schema: ${explain(headers)}`);
      }
    });
  }
}

if (document === undefined && errors === 0) {
  // The parser gives no document only with an error; be safe all the same.
  errors = 1;
  console.log(`${rel}: error: the parser returned no document`);
}
if (document !== undefined && document.version() !== '3.0.0') {
  errors += 1;
  console.log(`${rel}: error: asyncapi is ${document.version()}, expected 3.0.0`);
}

if (errors > 0) {
  console.error(`${rel}: ${errors} error(s)`);
  process.exit(1);
}
const others = diagnostics.length;
console.log(
  `${rel}: valid AsyncAPI ${document.version()} (${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.components().schemas().length} schemas; ` +
    `${others} non-error diagnostic(s))`,
);
