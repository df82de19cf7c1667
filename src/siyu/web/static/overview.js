// 概览 page: reads /v1/overview with the admin key kept in sessionStorage.
(function () {
  "use strict";
  const KEY = "siyu.adminKey";
  const $ = (sel) => document.querySelector(sel);
  const fmt = (n) => Number(n).toLocaleString("zh-CN");
  const yuan = (fen) => (Number(fen) / 100).toLocaleString("zh-CN", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  // `siyu demo` opens /#key=…: the fragment never reaches the server; keep it for this tab only.
  const fromUrl = new URLSearchParams(location.hash.slice(1)).get("key");
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    history.replaceState(null, "", location.pathname);
  }

  function showError(text) {
    const box = $("#error");
    box.textContent = text;
    box.hidden = false;
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      tr.appendChild(td);
    }
    return tr;
  }

  function render(data) {
    $("[data-metric=persons]").textContent = fmt(data.persons);
    $("[data-metric=contacts]").textContent = fmt(data.contacts);
    $("[data-metric=stock]").textContent = fmt(data.stock);
    $("[data-metric=orders]").textContent = fmt(data.orders);
    $("[data-metric=gmv]").textContent = "¥" + yuan(data.gmv_fen);
    $("[data-metric=buyers]").textContent = fmt(data.buyers);
    const months = $("#months tbody");
    months.replaceChildren(...data.months.map((m) =>
      row([m.month, fmt(m.inflow), fmt(m.outflow), fmt(m.net), fmt(m.stock), fmt(m.orders), yuan(m.gmv_fen)])));
    const channels = $("#channels tbody");
    channels.replaceChildren(...data.channels.map((c) =>
      row([c.channel, fmt(c.contacts), fmt(c.buyers), (100 * c.buyers / Math.max(c.contacts, 1)).toFixed(1) + "%", yuan(c.gmv_fen)])));
    $("#content").hidden = false;
    drawChart(data.months);
    document.body.dataset.ready = "1";
  }

  function drawChart(months) {
    const box = $("#flow-chart");
    if (typeof echarts === "undefined") {
      box.textContent = "图表库未安装（运行 bash scripts/setup.sh）— chart library not installed";
      return;
    }
    const chart = echarts.init(box);
    chart.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { data: ["新增 inflow", "流失 outflow", "净增 net"] },
      xAxis: { type: "category", data: months.map((m) => m.month) },
      yAxis: { type: "value", name: "人" },
      series: [
        { name: "新增 inflow", type: "bar", data: months.map((m) => m.inflow), itemStyle: { color: "#3370ff" } },
        { name: "流失 outflow", type: "bar", data: months.map((m) => -m.outflow), itemStyle: { color: "#f54a45" } },
        { name: "净增 net", type: "line", data: months.map((m) => m.net), itemStyle: { color: "#34c724" } },
      ],
    });
    window.addEventListener("resize", () => chart.resize());
  }

  async function load() {
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      $("#login").hidden = false;
      return;
    }
    $("#logout").hidden = false;
    try {
      const res = await fetch("/v1/overview", { headers: { Authorization: "Bearer " + key } });
      const body = await res.json();
      if (!res.ok) {
        if (res.status === 401 || res.status === 403) sessionStorage.removeItem(KEY);
        showError("无法读取概览：" + ((body.error && body.error.message) || res.status));
        $("#login").hidden = !(res.status === 401 || res.status === 403);
        return;
      }
      render(body);
    } catch (err) {
      showError("无法连接服务：" + err);
    }
  }

  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("#key").value.trim());
    $("#login").hidden = true;
    $("#error").hidden = true;
    load();
  });
  $("#logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  load();
})();
