// k8s_validate.mjs - checks Kubernetes objects (a JSON list on stdin) against the
// API's schemas as the npm package kubernetes-models carries them: each object
// through its model's validate() (types, required fields, enums), and every key
// against the model's declared fields, so that a misspelt or invented field is an
// error (the API server would drop it, or refuse it with --validate=strict).
// Prints {"checked": N, "errors": [...]} and exits 0.
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const require = createRequire(import.meta.url);
const root = path.dirname(require.resolve("kubernetes-models/package.json"));
const machinery = path.dirname(require.resolve("@kubernetes-models/apimachinery/package.json"));

// interface file -> { prop: type text }, read from the package's .d.ts files
const cache = new Map();
function fields(file) {
  if (cache.has(file)) return cache.get(file);
  const text = fs.readFileSync(file, "utf8");
  const imports = {};
  for (const m of text.matchAll(/import \{ (\w+)(?: as \w+)? \} from "([^"]+)";/g)) imports[m[1]] = m[2];
  const body = /export interface \w+(?: extends [\w<>, ]+)? \{([\s\S]*?)\n\}/.exec(text);
  const out = { props: body ? parseProps(body[1]) : {}, imports, dir: path.dirname(file) };
  cache.set(file, out);
  return out;
}

// "name"?: type; lines at the body's first level (a type may span lines: { ... })
function parseProps(text) {
  const props = {};
  const lines = text.replace(/\/\*\*[\s\S]*?\*\//g, "").split("\n");
  let depth = 0, name = null, type = "";
  for (const line of lines) {
    if (depth === 0) {
      const m = /^\s*"([^"]+)"\??: (.*)$/.exec(line);
      if (!m) continue;
      name = m[1];
      type = m[2];
    } else {
      type += "\n" + line;
    }
    depth += (line.match(/\{/g) || []).length - (line.match(/\}/g) || []).length;
    if (depth === 0 && name) { props[name] = type.replace(/;$/, ""); name = null; }
  }
  return props;
}

function resolveImport(spec, dir) {
  if (spec.startsWith(".")) return path.join(dir, spec.replace(/\.js$/, "") + ".d.ts");
  if (spec.startsWith("@kubernetes-models/apimachinery/")) return path.join(machinery, spec.slice(32) + ".d.ts");
  return null;
}

function check(value, info, where, errors) {
  if (!info || value === null || typeof value !== "object" || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    const t = info.props[k];
    if (t === undefined) { errors.push(`${where}.${k}: not a field of this object`); continue; }
    if (/^\{\s*\n?\s*\[key: string\]/.test(t)) continue;          // a free map (labels, annotations)
    const inline = /^(?:Array<)?\{([\s\S]*)\}>?$/.exec(t);        // an object type written in place
    if (inline) {
      const sub = { props: parseProps(inline[1]), imports: info.imports, dir: info.dir };
      if (/^Array</.test(t)) (Array.isArray(v) ? v : []).forEach((x, i) => check(x, sub, `${where}.${k}[${i}]`, errors));
      else check(v, sub, `${where}.${k}`, errors);
      continue;
    }
    const m = /(I[A-Z]\w+)/.exec(t);
    if (!m || !info.imports[m[1]]) continue;                       // a scalar, or a type without fields
    const file = resolveImport(info.imports[m[1]], info.dir);
    if (!file || !fs.existsSync(file)) continue;
    const sub = fields(file);
    if (!Object.keys(sub.props).length) continue;                  // IntOrString, Quantity, Time
    if (/^Array</.test(t)) (Array.isArray(v) ? v : []).forEach((x, i) => check(x, sub, `${where}.${k}[${i}]`, errors));
    else check(v, sub, `${where}.${k}`, errors);
  }
}

const docs = JSON.parse(fs.readFileSync(0, "utf8"));
const errors = [];
for (const d of docs) {
  const [group, version] = d.apiVersion.includes("/") ? d.apiVersion.split("/") : ["", d.apiVersion];
  const dir = path.join(root, group ? `${group}/${version}` : version);
  const where = `${d.kind}/${d.metadata && d.metadata.name}`;
  const file = path.join(dir, `${d.kind}.d.ts`);
  if (!fs.existsSync(file)) { errors.push(`${where}: no such kind in ${d.apiVersion}`); continue; }
  const mod = await import(`kubernetes-models/${group ? group + "/" : ""}${version}`);
  try { new mod[d.kind](d).validate(); } catch (e) { errors.push(`${where}: ${e.message}`); }
  check(d, fields(file), where, errors);
}
process.stdout.write(JSON.stringify({ checked: docs.length, errors }) + "\n");
