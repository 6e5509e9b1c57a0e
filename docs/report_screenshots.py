"""Screenshots of a Snakemake report in headless Chromium (how the PNGs in docs/ were made).

    python docs/report_screenshots.py results/report.html /tmp/report_nav.html
    chromium --headless --no-sandbox --disable-gpu --virtual-time-budget=15000 --window-size=1500,1100 \
        --screenshot=shot.png "file:///tmp/report_nav.html#cat=5.%20Figures&sub=ctrB&res=<result path>&info=1"
    chromium ... --dump-dom "file:///tmp/report_nav.html#dump=1"   # categories, captions, data present

Snakemake's report is a single-page app without URL navigation; this copies it with a small
script that opens the view named in the URL hash (category, subcategory, result, info panel) or
dumps every category, result, caption and whether its data is embedded.
"""
import sys

src, dst = sys.argv[1], sys.argv[2]
html = open(src, encoding="utf-8").read()
js = r"""
<script>
window.addEventListener('load', function () {
  setTimeout(function () {
    var p = new URLSearchParams(location.hash.slice(1));
    var out = {};
    try {
      if (p.get('dump')) {
        var cats = {};
        for (var c in categories) { cats[c] = {}; for (var s in categories[c]) { cats[c][s] = Object.keys(categories[c][s]).map(function (r) { return r; }); } }
        out.categories = cats;
        out.results = {};
        for (var r in results) { out.results[r] = {caption: results[r].caption, labels: results[r].labels, mime: getResultMimeType(r), has_data: !!results[r].data_uri && results[r].data_uri.length}; }
        var pre = document.createElement('pre'); pre.id = 'dump'; pre.textContent = JSON.stringify(out);
        document.body.appendChild(pre);
        return;
      }
      var view = {};
      if (p.get('cat')) { view.category = p.get('cat'); view.navbarMode = 'category'; }
      if (p.get('sub')) { view.subcategory = p.get('sub'); view.navbarMode = 'subcategory'; }
      if (p.get('res')) { var r = p.get('res'); view.content = 'img'; view.contentPath = results[r].data_uri; view.resultPath = r; }
      if (p.get('info')) { view.navbarMode = 'resultinfo'; }
      app.setView(view);
    } catch (e) { document.title = 'ERR ' + e; }
  }, 500);
});
</script>
"""
i = html.rfind("</body>")
open(dst, "w", encoding="utf-8").write(html[:i] + js + html[i:])
