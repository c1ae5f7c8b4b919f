/* assets.h - the demo application's embedded page and static files, compiled in
 * (no file is read at run time). Used by demo_app.c only; read-only, so every
 * worker thread serves them without locks. */
#ifndef CAIRN_DEMO_APP_ASSETS_H
#define CAIRN_DEMO_APP_ASSETS_H

/* The index page is a printf format taking the instance name twice. */
static const char demo_index_fmt[] =
    "<!doctype html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>cairn demo - %s</title>\n"
    "<link rel=\"stylesheet\" href=\"/static/style.css\">\n"
    "</head>\n"
    "<body>\n"
    "<main>\n"
    "<h1>cairn demo app</h1>\n"
    "<p>This page was rendered by instance <strong id=\"instance\">%s</strong>.</p>\n"
    "<p>The API says: <code id=\"hello\">loading...</code></p>\n"
    "<p><button id=\"again\">Call /api/hello again</button></p>\n"
    "</main>\n"
    "<script src=\"/static/app.js\"></script>\n"
    "</body>\n"
    "</html>\n";

static const char demo_app_js[] =
    "// cairn demo app: calls the dynamic API and shows which instance answered.\n"
    "async function hello() {\n"
    "  const out = document.getElementById('hello');\n"
    "  try {\n"
    "    const r = await fetch('/api/hello', {cache: 'no-store'});\n"
    "    const j = await r.json();\n"
    "    out.textContent = j.message + ' (instance ' + j.instance + ')';\n"
    "  } catch (e) {\n"
    "    out.textContent = 'error: ' + e;\n"
    "  }\n"
    "}\n"
    "document.getElementById('again').addEventListener('click', hello);\n"
    "hello();\n";

static const char demo_style_css[] =
    "body { font-family: system-ui, sans-serif; margin: 0; background: #f6f5f2; color: #222; }\n"
    "main { max-width: 40rem; margin: 4rem auto; padding: 2rem; background: #fff;\n"
    "       border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.1); }\n"
    "h1 { margin-top: 0; font-weight: 600; }\n"
    "code { background: #eee; padding: .1rem .3rem; border-radius: 3px; }\n"
    "button { padding: .4rem .8rem; }\n";

#endif
