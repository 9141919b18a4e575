"""The viewer page: HTML, CSS and the script that drives NiiVue (placeholders are filled by viewer_html)."""

TEMPLATE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; background: #111; color: #eee; }
</style>
</head>
<body>
<!--body-->
<style>
  .mriad-viewer { background: #111; color: #eee; padding: 8px 12px; }
  .mriad-viewer .controls { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin: 8px 0; }
  .mriad-viewer .canvas-box { width: 100%; height: 640px; background: #000; }
  .mriad-viewer .status { font-family: monospace; min-height: 1.4em; margin-top: 6px; }
  .mriad-viewer small { color: #aaa; }
</style>
<div class="mriad-viewer" id="mriad-viewer">
  <h2>__TITLE__</h2>
  <div class="controls">
    <label>axial slice <input type="range" class="slice" min="0" max="1000" value="500"></label>
    <label><input type="checkbox" class="show-anomaly" checked> anomaly overlay</label>
    <label><input type="checkbox" class="show-outlines" checked> outlines</label>
    <label>view
      <select class="layout">
        <option value="3">all planes</option><option value="0">axial</option>
        <option value="1">coronal</option><option value="2">sagittal</option>
      </select>
    </label>
    <small>click to move the crosshair; scroll to page through slices</small>
  </div>
  <div class="canvas-box"><canvas></canvas></div>
  <div class="status"></div>
  <div class="legend"></div>
  <small>Viewer: NiiVue __NIIVUE_VERSION__ (BSD-2-Clause), embedded; works offline.</small>
</div>
<script>__NIIVUE__</script>
<script>
(async function () {
  const root = document.currentScript.previousElementSibling.previousElementSibling;
  const volumes = __VOLUMES__;
  const threshold = __THRESHOLD__;
  const status = root.querySelector(".status");
  try {
    const nv = new niivue.Niivue({ isColorbar: true, backColor: [0, 0, 0, 1], crosshairColor: [0.2, 1, 0.2, 1],
                                   show3Dcrosshair: true, dragAndDropEnabled: false });
    await nv.attachToCanvas(root.querySelector("canvas"));
    for (const v of volumes) {
      const image = await niivue.NVImage.loadFromBase64({
        base64: v.b64, name: v.name, colormap: v.colormap, opacity: v.opacity,
        cal_min: v.cal_min, cal_max: v.cal_max, colorbarVisible: v.colorbar });
      nv.addVolume(image);
    }
    nv.setSliceType(nv.sliceTypeMultiplanar);
    root.querySelector(".legend").textContent = "layers: " + volumes.map(v => v.label).join(", ") +
      (threshold === null ? "" : "; anomaly shown from half the threshold (" + threshold.toPrecision(4) + ") up");
    const slider = root.querySelector(".slice");
    slider.addEventListener("input", () => {
      nv.scene.crosshairPos[2] = slider.value / 1000;
      nv.drawScene();
    });
    root.querySelector(".show-anomaly").addEventListener("change", (e) => {
      nv.setOpacity(1, e.target.checked ? volumes[1].opacity : 0);
    });
    root.querySelector(".show-outlines").addEventListener("change", (e) => {
      for (let i = 2; i < volumes.length; i++) nv.setOpacity(i, e.target.checked ? 1 : 0);
    });
    root.querySelector(".layout").addEventListener("change", (e) => nv.setSliceType(Number(e.target.value)));
    nv.onLocationChange = (data) => { status.textContent = data.string || ""; };
    // Start at the lesion (or the strongest anomaly); "?overlay=off" hides the anomaly map (for tests).
    const focus = __FOCUS__;
    for (let i = 0; i < 3; i++) nv.scene.crosshairPos[i] = focus[i];
    slider.value = Math.round(focus[2] * 1000);
    if ((new URLSearchParams(location.search)).get("overlay") === "off") nv.setOpacity(1, 0);
    nv.drawScene();
    document.body.dataset.viewerReady = "1";
  } catch (error) {
    status.textContent = "viewer error: " + error;
    document.body.dataset.viewerError = String(error);
  }
})();
</script>
<!--/body-->
</body>
</html>
"""
