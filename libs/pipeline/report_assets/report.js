/* Draws the charts of a model's report.html from the JSON embedded in the page
 * (<script type="application/json" id="trainbus-data">), with the dashboard's own chart code
 * (charts.js, inlined before this script). */
(function () {
  "use strict";
  var source = document.getElementById("trainbus-data");
  var charts = window.TrainbusCharts;
  if (!source || !charts) return;
  var data = JSON.parse(source.textContent || "{}");

  function put(id, svg) {
    var slot = document.getElementById(id);
    if (!slot) return;
    slot.textContent = "";
    slot.appendChild(svg);
  }

  var drawn = charts.historyCharts(data.history || [], { totalEpochs: data.total_epochs });
  put("chart-loss", drawn.loss);
  put("chart-accuracy", drawn.accuracy);
  put("chart-lr", drawn.learningRate);
  if (data.equity && Array.isArray(data.equity.time) && data.equity.time.length) {
    put("chart-equity", charts.equityChart(data.equity));
  }
  if (data.confusion && data.confusion.matrix && data.confusion.matrix.length) {
    put("confusion", charts.confusionMatrix({
      matrix: data.confusion.matrix, labels: data.confusion.labels, title: "confusion matrix"
    }));
  }

  // The version is the directory's name (<tf>_v<N>), chosen when the save was renamed into place.
  var version = document.getElementById("version");
  var match = /\/([0-9]+[a-z]_v[0-9]+)\/[^/]*$/.exec(window.location.pathname);
  if (version && !version.textContent && match) version.textContent = match[1];
})();
