// Reads each .mmd file named on the command line with Mermaid's own parser
// and prints, per file, one JSON line: what Mermaid understood (states with
// their description lines and classes, transitions with their labels, the
// direction), or the error it raised.  tests/test_diagram_mermaid.py
// compares that with the machine the file was generated from.
//
// Mermaid is written for browsers.  Under node, importing it works, but its
// sanitiser (DOMPurify) is built at import time from the global `window`:
// without one, `mermaid.parse` fails with "DOMPurify.addHook is not a
// function".  So a jsdom window is installed as the global `window` and
// `document` *before* Mermaid is imported (hence the dynamic import).  The
// same window decodes the HTML entities Mermaid leaves in labels, as a
// browser would when it renders them.
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const { window } = new JSDOM("");
globalThis.window = window;
globalThis.document = window.document;
const { default: mermaid } = await import("mermaid");

// Mermaid swaps `#name;` / `#123;` for placeholders before parsing and back
// to `&name;` / `&#123;` when rendering; this is that second step.
function decode(text) {
  const html = text.replaceAll("ﬂ°°", "&#").replaceAll("ﬂ°", "&").replaceAll("¶ß", ";");
  const area = window.document.createElement("textarea");
  area.innerHTML = html;
  return area.value;
}

for (const file of process.argv.slice(2)) {
  try {
    const text = readFileSync(file, "utf8");
    await mermaid.parse(text);
    const diagram = await mermaid.mermaidAPI.getDiagramFromText(text);
    const db = diagram.db;
    const states = {};
    for (const [id, state] of db.getStates()) {
      states[id] = {
        descriptions: (state.descriptions ?? []).map(decode),
        classes: [...(state.classes ?? [])],
      };
    }
    const relations = db.getRelations().map((r) => [r.id1, r.id2, decode(r.relationTitle ?? "")]);
    console.log(
      JSON.stringify({ file, ok: true, type: diagram.type, direction: db.getDirection(), states, relations }),
    );
  } catch (error) {
    console.log(JSON.stringify({ file, ok: false, error: String(error.message ?? error) }));
  }
}
