// Order lookup: GET /order/{id}, then show the order and where it came from (X-Source, X-Duration-ms).
"use strict";

const $ = (id) => document.getElementById(id);

function money(value, currency) {
  return `${value} ${currency || ""}`.trim();
}

function fillList(dl, pairs) {
  dl.replaceChildren();
  for (const [label, value] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = value === "" || value === null || value === undefined ? "—" : String(value);
    dd.dataset.field = label;
    dl.append(dt, dd);
  }
}

function showStatus(text, isError) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", Boolean(isError));
}

function render(order, source, duration) {
  const p = order.payment;
  const d = order.delivery;
  $("meta-source").textContent = source || "?";
  $("meta-duration").textContent = duration || "?";
  fillList($("order-header"), [
    ["order_uid", order.order_uid],
    ["track_number", order.track_number],
    ["entry", order.entry],
    ["customer_id", order.customer_id],
    ["date_created", new Date(order.date_created).toLocaleString() + ` (${order.date_created})`],
    ["locale", order.locale],
    ["delivery_service", order.delivery_service],
    ["shardkey / oof_shard", `${order.shardkey} / ${order.oof_shard}`],
    ["sm_id", order.sm_id],
    ["internal_signature", order.internal_signature],
  ]);
  fillList($("order-delivery"), [
    ["name", d.name], ["phone", d.phone], ["email", d.email], ["city", d.city],
    ["address", d.address], ["region", d.region], ["zip", d.zip],
  ]);
  fillList($("order-payment"), [
    ["transaction", p.transaction], ["provider", p.provider], ["bank", p.bank],
    ["amount", money(p.amount, p.currency)], ["goods_total", money(p.goods_total, p.currency)],
    ["delivery_cost", money(p.delivery_cost, p.currency)], ["custom_fee", money(p.custom_fee, p.currency)],
    ["paid at", new Date(p.payment_dt * 1000).toLocaleString()], ["request_id", p.request_id],
  ]);
  const body = $("items").tBodies[0];
  body.replaceChildren();
  order.items.forEach((item, index) => {
    const row = body.insertRow();
    const cells = [index + 1, item.name, item.brand, item.size, item.price, item.sale,
      item.total_price, item.chrt_id, item.nm_id, item.rid, item.status];
    cells.forEach((value, column) => {
      const cell = row.insertCell();
      cell.textContent = String(value);
      if (column >= 4 && column <= 6) cell.className = "num";
    });
  });
  $("items-count").textContent = String(order.items.length);
  $("order").hidden = false;
}

async function lookup(event) {
  event.preventDefault();
  const id = $("order-id").value.trim();
  if (!id) return;
  $("order").hidden = true;
  showStatus(`Looking up ${id}…`, false);
  const query = $("nocache").checked ? "?nocache=1" : "";
  let response;
  try {
    response = await fetch(`/order/${encodeURIComponent(id)}${query}`, { headers: { Accept: "application/json" } });
  } catch (err) {
    showStatus(`The service did not answer: ${err}`, true);
    return;
  }
  if (response.status === 404) {
    showStatus(`Order ${id} was not found.`, true);
    return;
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error.message; } catch (_) { /* keep the status text */ }
    showStatus(`Error ${response.status}: ${message}`, true);
    return;
  }
  const order = await response.json();
  render(order, response.headers.get("X-Source"), response.headers.get("X-Duration-ms"));
  showStatus(`Order ${order.order_uid} with ${order.items.length} item(s).`, false);
}

$("lookup").addEventListener("submit", lookup);
const initial = new URLSearchParams(location.search).get("id");
if (initial) {
  $("order-id").value = initial;
  $("lookup").requestSubmit();
}
