// odelt's built-in graph editor: plain JavaScript, HTML nodes on a pannable canvas, SVG links.
// Talks to the server's ComfyUI API (/api/object_info, /api/prompt, /ws, /api/view).
"use strict";
(function () {
  const API = "/api";
  const WIDGET_TYPES = new Set(["INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"]);
  const CONTROL_MODES = ["fixed", "increment", "decrement", "randomize"];
  const $ = (id) => document.getElementById(id);

  const state = {
    defs: {},
    nodes: new Map(), // id -> node
    links: new Map(), // id -> link
    nextNodeId: 1,
    nextLinkId: 1,
    pan: { x: 40, y: 40 },
    scale: 1,
    selected: null,
    clientId: "odelt-editor-" + Math.random().toString(16).slice(2, 10),
    ws: null,
    promptIds: new Set(),
    lastProgressNode: null,
    drag: null,
    listeners: [], // selftest hooks: fn(type, data)
    ready: false, // the first graph is on screen: changes are stored from now on
  };

  // ---------- small helpers ----------
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children || []) e.appendChild(c);
    return e;
  }

  function message(text, isError) {
    const m = el("div", { class: "message" + (isError ? " error" : ""), text });
    $("messages").appendChild(m);
    setTimeout(() => m.remove(), isError ? 12000 : 5000);
    (isError ? console.warn : console.log)("[odelt] " + text);
  }

  function typeColor(type) {
    let h = 0;
    for (const c of String(type)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
    return "hsl(" + (h % 360) + ", 60%, 55%)";
  }

  function specType(spec) {
    const t = spec[0];
    if (Array.isArray(t) || t === "COMBO") return "COMBO";
    return String(t);
  }
  function specOpts(spec) {
    return (spec.length > 1 && spec[1] && typeof spec[1] === "object") ? spec[1] : {};
  }
  // ComfyUI's frontends give an INT a "control after generate" choice when its spec asks for
  // one, and always to an INT named seed or noise_seed (its value follows in widgets_values).
  function hasControl(name, spec) {
    return specType(spec) === "INT" && (specOpts(spec).control_after_generate !== undefined
      || name === "seed" || name === "noise_seed");
  }
  function comboOptions(spec) {
    if (Array.isArray(spec[0])) return spec[0];
    const o = specOpts(spec).options;
    return Array.isArray(o) ? o : [];
  }

  // Output type `out` may feed input type `inp`: equal, overlapping comma unions, or "*".
  function typesMatch(out, inp) {
    if (inp === "COMBO") inp = "COMBO,STRING";
    const a = String(out).split(",").map((s) => s.trim());
    const b = String(inp).split(",").map((s) => s.trim());
    if (a.includes("*") || b.includes("*")) return true;
    return a.some((t) => b.includes(t));
  }

  function emit(type, data) {
    for (const f of state.listeners) {
      try { f(type, data); } catch (e) { console.error(e); }
    }
  }

  // ---------- palette ----------
  async function loadDefs() {
    const r = await fetch(API + "/object_info");
    if (!r.ok) throw new Error("GET /object_info failed: " + r.status);
    state.defs = await r.json();
    renderPalette("");
  }

  function renderPalette(filter) {
    const list = $("palette-list");
    list.textContent = "";
    const f = filter.trim().toLowerCase();
    const byCat = new Map();
    for (const [name, def] of Object.entries(state.defs)) {
      const label = def.display_name || name;
      if (f && !label.toLowerCase().includes(f) && !name.toLowerCase().includes(f)
          && !(def.category || "").toLowerCase().includes(f)) continue;
      const cat = def.category || "other";
      if (!byCat.has(cat)) byCat.set(cat, []);
      byCat.get(cat).push([name, label, def]);
    }
    for (const cat of [...byCat.keys()].sort()) {
      list.appendChild(el("div", { class: "palette-category", text: cat }));
      for (const [name, label, def] of byCat.get(cat).sort((a, b) => a[1].localeCompare(b[1]))) {
        const item = el("button", {
          class: "palette-item", "data-type": name, title: def.description || name, text: label,
        });
        item.addEventListener("click", () => {
          const c = $("canvas").getBoundingClientRect();
          const n = state.nodes.size;
          const node = addNode(name, {
            x: -state.pan.x + 60 + (n % 5) * 40,
            y: -state.pan.y + 60 + (n % 5) * 40 + Math.floor(n / 5) * 30,
          });
          if (node) selectNode(node);
          void c;
        });
        list.appendChild(item);
      }
    }
  }

  // ---------- nodes ----------
  function defaultValue(type, spec) {
    const o = specOpts(spec);
    if (o.default !== undefined) return o.default;
    switch (type) {
      case "INT": case "FLOAT": return o.min !== undefined && o.min > 0 ? o.min : 0;
      case "BOOLEAN": return false;
      case "COMBO": return comboOptions(spec)[0] ?? "";
      default: return "";
    }
  }

  function makeWidget(type, spec) {
    const o = specOpts(spec);
    let input;
    if (type === "COMBO") {
      input = el("select", { class: "widget" });
      for (const opt of comboOptions(spec)) input.appendChild(el("option", { value: String(opt), text: String(opt) }));
    } else if (type === "BOOLEAN") {
      input = el("input", { class: "widget", type: "checkbox" });
      if (o.label_on) input.title = o.label_on + " / " + (o.label_off || "");
    } else if (type === "STRING") {
      input = o.multiline ? el("textarea", { class: "widget" }) : el("input", { class: "widget", type: "text" });
      if (o.placeholder) input.placeholder = o.placeholder;
    } else {
      input = el("input", { class: "widget", type: "number" });
      if (o.min !== undefined) input.min = String(o.min);
      if (o.max !== undefined) input.max = String(o.max);
      input.step = o.step !== undefined ? String(o.step) : (type === "INT" ? "1" : "any");
    }
    const w = {
      el: input,
      get() {
        switch (type) {
          case "BOOLEAN": return input.checked;
          case "INT": { const v = parseInt(input.value, 10); return Number.isFinite(v) ? v : 0; }
          case "FLOAT": { const v = parseFloat(input.value); return Number.isFinite(v) ? v : 0; }
          default: return input.value;
        }
      },
      set(v) {
        if (type === "BOOLEAN") input.checked = !!v;
        else if (type === "COMBO" && ![...input.options].some((op) => op.value === String(v))) {
          input.appendChild(el("option", { value: String(v), text: String(v) + " (missing)" }));
          input.value = String(v);
        } else input.value = String(v);
      },
    };
    // Keep numbers inside their range as the user types.
    if (type === "INT" || type === "FLOAT") {
      input.addEventListener("change", () => {
        let v = w.get();
        if (o.min !== undefined && v < o.min) v = o.min;
        if (o.max !== undefined && v > o.max) v = o.max;
        w.set(v);
      });
    }
    input.addEventListener("pointerdown", (e) => e.stopPropagation());
    input.addEventListener("keydown", (e) => e.stopPropagation());
    w.set(defaultValue(type, spec));
    return w;
  }

  function addNode(type, pos, id) {
    const def = state.defs[type];
    if (!def) {
      message("Unknown node type '" + type + "' (not in /object_info)", true);
      return null;
    }
    if (id === undefined) {
      while (state.nodes.has(String(state.nextNodeId))) state.nextNodeId++;
      id = String(state.nextNodeId++);
    } else {
      id = String(id);
      const n = parseInt(id, 10);
      if (Number.isFinite(n) && n >= state.nextNodeId) state.nextNodeId = n + 1;
    }
    const node = {
      id, type, title: def.display_name || type, x: pos.x, y: pos.y,
      inputs: [], outputs: [], el: null,
    };
    const title = el("div", { class: "node-title" }, [
      el("span", { class: "node-id", text: "#" + id }),
      el("span", { class: "name", text: node.title, title: def.description || "" }),
      el("button", { class: "node-delete", title: "Delete node", text: "×" }),
    ]);
    const body = el("div", { class: "node-body" });
    const root = el("div", { class: "node", "data-id": id, "data-type": type }, [title, body]);
    node.el = root;
    // Inputs in ComfyUI's input_order (required, then optional).
    const order = def.input_order || {};
    for (const group of ["required", "optional"]) {
      const specs = (def.input && def.input[group]) || {};
      const names = order[group] || Object.keys(specs);
      for (const name of names) {
        const spec = specs[name];
        if (!spec) continue;
        const t = specType(spec);
        const o = specOpts(spec);
        const socket = el("span", { class: "socket in", title: name + ": " + t });
        socket.style.background = typeColor(t);
        const row = el("div", { class: "row in" + (group === "optional" ? " optional" : "") }, [
          socket, el("label", { text: name, title: o.tooltip || t }),
        ]);
        const inp = { name, type: t, spec, required: group === "required", socket, link: null, widget: null, row };
        if (WIDGET_TYPES.has(t) && !o.forceInput) {
          inp.widget = makeWidget(t, spec);
          inp.widget.el.setAttribute("data-input", name);
          row.appendChild(inp.widget.el);
          // ComfyUI's "control after generate": what happens to a seed after each queue.
          if (hasControl(name, spec)) {
            inp.control = el("select", { class: "widget control", title: "after each queue", "data-control": name });
            for (const c of CONTROL_MODES) inp.control.appendChild(el("option", { value: c, text: c }));
            inp.control.value = "fixed";
            inp.control.addEventListener("pointerdown", (e) => e.stopPropagation());
            row.appendChild(inp.control);
          }
        }
        socket.addEventListener("pointerdown", (e) => startDragFromInput(e, node, inp));
        node.inputs.push(inp);
        body.appendChild(row);
      }
    }
    (def.output || []).forEach((t, slot) => {
      const name = (def.output_name && def.output_name[slot]) || t;
      const socket = el("span", { class: "socket out", title: name + ": " + t });
      socket.style.background = typeColor(t);
      const out = { name, type: String(t), slot, socket, links: new Set() };
      socket.addEventListener("pointerdown", (e) => startDragFromOutput(e, node, out));
      node.outputs.push(out);
      body.appendChild(el("div", { class: "row out" }, [el("label", { text: name }), socket]));
    });
    node.progress = el("div", { class: "progress" }, [el("div")]);
    node.text = el("div", { class: "node-text" });
    node.images = el("div", { class: "node-images" });
    node.errorEl = el("div", { class: "node-error" });
    root.append(node.progress, node.text, node.images, node.errorEl);

    title.querySelector(".node-delete").addEventListener("click", (e) => { e.stopPropagation(); removeNode(node); });
    title.addEventListener("pointerdown", (e) => startMoveNode(e, node));
    root.addEventListener("pointerdown", () => selectNode(node));
    $("world").appendChild(root);
    state.nodes.set(id, node);
    placeNode(node);
    $("hint").style.display = "none";
    emit("node-added", node);
    return node;
  }

  function placeNode(node) {
    node.el.style.left = node.x + "px";
    node.el.style.top = node.y + "px";
  }

  function selectNode(node) {
    if (state.selected && state.selected.el) state.selected.el.classList.remove("selected");
    state.selected = node;
    if (node) node.el.classList.add("selected");
  }

  function removeNode(node) {
    for (const inp of node.inputs) if (inp.link) removeLink(inp.link);
    for (const out of node.outputs) for (const l of [...out.links]) removeLink(l);
    node.el.remove();
    state.nodes.delete(node.id);
    if (state.selected === node) state.selected = null;
  }

  function clearGraph() {
    for (const n of [...state.nodes.values()]) removeNode(n);
    state.nextNodeId = 1;
    state.nextLinkId = 1;
  }

  // ---------- links ----------
  function socketCenter(sock) {
    const r = sock.getBoundingClientRect();
    const w = $("world").getBoundingClientRect();
    return { x: (r.left + r.width / 2 - w.left) / state.scale, y: (r.top + r.height / 2 - w.top) / state.scale };
  }

  function curve(a, b) {
    const dx = Math.max(40, Math.abs(b.x - a.x) / 2);
    return "M" + a.x + "," + a.y + " C" + (a.x + dx) + "," + a.y + " " + (b.x - dx) + "," + b.y + " " + b.x + "," + b.y;
  }

  function drawLink(link) {
    link.path.setAttribute("d", curve(socketCenter(link.out.socket), socketCenter(link.inp.socket)));
  }

  function redrawLinks(node) {
    for (const l of state.links.values()) if (!node || l.from === node || l.to === node) drawLink(l);
  }

  // Connects output `out` of `from` to input `inp` of `to`; refuses incompatible types.
  function connect(from, out, to, inp, linkId) {
    if (!typesMatch(out.type, inp.type)) {
      message("Cannot connect " + out.type + " to " + inp.name + " (" + inp.type + ")", true);
      return null;
    }
    if (from === to) {
      message("A node cannot feed itself", true);
      return null;
    }
    if (inp.link) removeLink(inp.link);
    if (linkId === undefined) {
      while (state.links.has(state.nextLinkId)) state.nextLinkId++;
      linkId = state.nextLinkId++;
    } else if (linkId >= state.nextLinkId) state.nextLinkId = linkId + 1;
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("stroke", typeColor(out.type));
    $("links").appendChild(path);
    const link = { id: linkId, from, out, to, inp, path };
    state.links.set(linkId, link);
    inp.link = link;
    out.links.add(link);
    if (inp.widget) inp.widget.el.disabled = true;
    drawLink(link);
    emit("linked", link);
    return link;
  }

  function removeLink(link) {
    link.path.remove();
    state.links.delete(link.id);
    link.inp.link = null;
    link.out.links.delete(link);
    if (link.inp.widget) link.inp.widget.el.disabled = false;
  }

  // ---------- pointer interaction ----------
  function trackPointer(onMove, onUp) {
    const move = (e) => onMove(e);
    const up = (e) => {
      window.removeEventListener("pointermove", move);
      window.removeEventListener("pointerup", up);
      onUp(e);
    };
    window.addEventListener("pointermove", move);
    window.addEventListener("pointerup", up);
  }

  function startMoveNode(e, node) {
    if (e.button !== 0 || e.target.classList.contains("node-delete")) return;
    e.stopPropagation();
    selectNode(node);
    const sx = e.clientX, sy = e.clientY, nx = node.x, ny = node.y;
    trackPointer((m) => {
      node.x = nx + (m.clientX - sx) / state.scale;
      node.y = ny + (m.clientY - sy) / state.scale;
      placeNode(node);
      redrawLinks(node);
    }, () => {});
  }

  function markCompatible(type) {
    for (const n of state.nodes.values()) {
      for (const inp of n.inputs) {
        if (type === null) inp.socket.classList.remove("compatible", "incompatible");
        else inp.socket.classList.add(typesMatch(type, inp.type) ? "compatible" : "incompatible");
      }
    }
  }

  function findInputAt(x, y) {
    const hit = document.elementFromPoint(x, y);
    if (!hit) return null;
    const row = hit.closest(".row.in");
    const nodeEl = hit.closest(".node");
    if (!row || !nodeEl) return null;
    const node = state.nodes.get(nodeEl.getAttribute("data-id"));
    if (!node) return null;
    const inp = node.inputs.find((i) => i.row === row);
    return inp ? { node, inp } : null;
  }

  function startDragFromOutput(e, node, out) {
    e.stopPropagation();
    e.preventDefault();
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("class", "dragging");
    path.setAttribute("stroke", typeColor(out.type));
    $("links").appendChild(path);
    const start = socketCenter(out.socket);
    const w0 = $("world").getBoundingClientRect();
    markCompatible(out.type);
    trackPointer((m) => {
      path.setAttribute("d", curve(start, { x: (m.clientX - w0.left) / state.scale, y: (m.clientY - w0.top) / state.scale }));
    }, (u) => {
      path.remove();
      markCompatible(null);
      const target = findInputAt(u.clientX, u.clientY);
      if (target) connect(node, out, target.node, target.inp);
    });
  }

  // Dragging from a connected input detaches the link and carries it from its output.
  function startDragFromInput(e, node, inp) {
    e.stopPropagation();
    if (!inp.link) return;
    const link = inp.link;
    removeLink(link);
    startDragFromOutput(e, link.from, link.out);
  }

  function setupCanvas() {
    const canvas = $("canvas");
    canvas.addEventListener("pointerdown", (e) => {
      if (e.target !== canvas && e.target !== $("world") && e.target.id !== "links") return;
      selectNode(null);
      const sx = e.clientX, sy = e.clientY, px = state.pan.x, py = state.pan.y;
      canvas.classList.add("panning");
      trackPointer((m) => {
        state.pan.x = px + m.clientX - sx;
        state.pan.y = py + m.clientY - sy;
        applyPan();
      }, () => canvas.classList.remove("panning"));
    });
    window.addEventListener("keydown", (e) => {
      if ((e.key === "Delete" || e.key === "Backspace") && state.selected
          && !/INPUT|TEXTAREA|SELECT/.test(document.activeElement.tagName)) {
        removeNode(state.selected);
      }
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) queuePrompt();
    });
    canvas.addEventListener("wheel", (e) => {
      if (e.target.closest && e.target.closest("textarea, select")) return;
      e.preventDefault();
      zoomAt(e.clientX, e.clientY, e.deltaY < 0 ? 1.1 : 1 / 1.1);
    }, { passive: false });
    applyPan();
  }

  function applyPan() {
    $("world").style.transform = "translate(" + state.pan.x + "px," + state.pan.y + "px) scale(" + state.scale + ")";
  }

  // Mouse wheel zooms around the cursor.
  function zoomAt(clientX, clientY, factor) {
    const c = $("canvas").getBoundingClientRect();
    const s = Math.min(2, Math.max(0.25, state.scale * factor));
    const cx = clientX - c.left, cy = clientY - c.top;
    state.pan.x = cx - (cx - state.pan.x) * (s / state.scale);
    state.pan.y = cy - (cy - state.pan.y) * (s / state.scale);
    state.scale = s;
    applyPan();
  }

  // Shows every node: scale down if needed, centre the graph.
  function fitView() {
    if (state.nodes.size === 0) return;
    let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
    for (const n of state.nodes.values()) {
      x0 = Math.min(x0, n.x); y0 = Math.min(y0, n.y);
      x1 = Math.max(x1, n.x + n.el.offsetWidth); y1 = Math.max(y1, n.y + n.el.offsetHeight);
    }
    const c = $("canvas").getBoundingClientRect();
    const s = Math.max(0.25, Math.min(1, (c.width - 60) / (x1 - x0), (c.height - 60) / (y1 - y0)));
    state.scale = s;
    state.pan.x = (c.width - (x1 - x0) * s) / 2 - x0 * s;
    state.pan.y = Math.max(20, (c.height - (y1 - y0) * s) / 2) - y0 * s;
    applyPan();
  }

  // ---------- API-format prompt and UI workflow ----------
  function buildPrompt() {
    const prompt = {};
    for (const node of state.nodes.values()) {
      const inputs = {};
      for (const inp of node.inputs) {
        if (inp.link) inputs[inp.name] = [inp.link.from.id, inp.link.out.slot];
        else if (inp.widget) {
          const v = inp.widget.get();
          inputs[inp.name] = Array.isArray(v) ? { __value__: v } : v;
        }
      }
      prompt[node.id] = { class_type: node.type, inputs, _meta: { title: node.title } };
    }
    return prompt;
  }

  // ComfyUI's UI workflow (version 0.4) so PNGs from odelt also open in ComfyUI's frontend.
  function buildWorkflow() {
    const nodes = [];
    let order = 0;
    for (const node of state.nodes.values()) {
      const widgets = [];
      for (const inp of node.inputs) {
        if (!inp.widget) continue;
        widgets.push(inp.widget.get());
        if (hasControl(inp.name, inp.spec)) widgets.push(inp.control ? inp.control.value : "fixed");
      }
      nodes.push({
        id: numId(node.id), type: node.type, pos: [node.x, node.y],
        size: [node.el.offsetWidth, node.el.offsetHeight], flags: {}, order: order++, mode: 0,
        inputs: node.inputs.map((i) => {
          const o = { name: i.name, type: i.type, link: i.link ? i.link.id : null };
          if (i.widget) o.widget = { name: i.name };
          return o;
        }),
        outputs: node.outputs.map((o) => ({
          name: o.name, type: o.type, links: [...o.links].map((l) => l.id), slot_index: o.slot,
        })),
        properties: { "Node name for S&R": node.type },
        widgets_values: widgets,
      });
    }
    const links = [...state.links.values()].map((l) => [
      l.id, numId(l.from.id), l.out.slot, numId(l.to.id), l.to.inputs.indexOf(l.inp), l.out.type,
    ]);
    let lastNode = 0;
    for (const n of state.nodes.keys()) lastNode = Math.max(lastNode, parseInt(n, 10) || 0);
    return {
      last_node_id: lastNode, last_link_id: Math.max(0, ...state.links.keys()),
      nodes, links, groups: [], config: {}, extra: { odelt: { editor: 1 } }, version: 0.4,
    };
  }

  function numId(id) {
    const n = Number(id);
    return Number.isInteger(n) && String(n) === id ? n : id;
  }

  function loadApiPrompt(prompt) {
    clearGraph();
    const entries = Object.entries(prompt).filter(([, n]) => n && typeof n === "object" && n.class_type);
    const depth = new Map();
    const depthOf = (id, seen) => {
      if (depth.has(id)) return depth.get(id);
      if (seen.has(id)) return 0;
      seen.add(id);
      let d = 0;
      const n = prompt[id];
      for (const v of Object.values((n && n.inputs) || {})) {
        if (Array.isArray(v) && v.length === 2 && prompt[String(v[0])]) d = Math.max(d, depthOf(String(v[0]), seen) + 1);
      }
      depth.set(id, d);
      return d;
    };
    const columns = new Map();
    for (const [id] of entries) {
      const d = depthOf(id, new Set());
      if (!columns.has(d)) columns.set(d, []);
      columns.get(d).push(id);
    }
    const widths = new Map();
    for (const [d, ids] of columns) {
      let y = 0;
      for (const id of ids) {
        const n = prompt[id];
        const node = addNode(n.class_type, { x: 0, y }, id);
        if (!node) continue;
        if (n._meta && n._meta.title) node.el.querySelector(".name").textContent = node.title = n._meta.title;
        for (const [name, v] of Object.entries(n.inputs || {})) {
          const inp = node.inputs.find((i) => i.name === name);
          if (!inp || !inp.widget || Array.isArray(v)) continue;
          inp.widget.set(v && typeof v === "object" && "__value__" in v ? v.__value__ : v);
        }
        y += node.el.offsetHeight + 30;
        widths.set(d, Math.max(widths.get(d) || 0, node.el.offsetWidth));
      }
    }
    // Columns by depth, each as wide as its widest node.
    const xs = new Map();
    let x = 0;
    for (const d of [...columns.keys()].sort((a, b) => a - b)) { xs.set(d, x); x += (widths.get(d) || 200) + 60; }
    for (const [d, ids] of columns) {
      for (const id of ids) { const nd = state.nodes.get(id); if (nd) { nd.x = xs.get(d); placeNode(nd); } }
    }
    for (const [id, n] of entries) {
      const to = state.nodes.get(id);
      if (!to) continue;
      for (const [name, v] of Object.entries(n.inputs || {})) {
        if (!Array.isArray(v) || v.length !== 2) continue;
        const from = state.nodes.get(String(v[0]));
        const inp = to.inputs.find((i) => i.name === name);
        const out = from && from.outputs[v[1]];
        if (inp && out) connect(from, out, to, inp);
      }
    }
    fitView();
    redrawLinks();
    emit("loaded", { nodes: state.nodes.size, links: state.links.size });
  }

  function loadWorkflow(wf) {
    clearGraph();
    const byId = new Map();
    for (const n of wf.nodes || []) {
      if (!n || !n.type) continue;
      const pos = Array.isArray(n.pos) ? { x: +n.pos[0] || 0, y: +n.pos[1] || 0 }
        : (n.pos && typeof n.pos === "object" ? { x: +n.pos[0] || +n.pos.x || 0, y: +n.pos[1] || +n.pos.y || 0 } : { x: 0, y: 0 });
      const node = addNode(n.type, pos, String(n.id));
      if (!node) continue;
      byId.set(String(n.id), { node, src: n });
      if (n.title) node.el.querySelector(".name").textContent = node.title = n.title;
      const vals = n.widgets_values;
      if (Array.isArray(vals)) {
        let k = 0;
        for (const inp of node.inputs) {
          if (!inp.widget) continue;
          if (k < vals.length) inp.widget.set(vals[k]);
          k++;
          if (hasControl(inp.name, inp.spec)) {
            if (inp.control && CONTROL_MODES.includes(vals[k])) inp.control.value = vals[k];
            k++;
          }
        }
      } else if (vals && typeof vals === "object") {
        for (const inp of node.inputs) if (inp.widget && inp.name in vals) inp.widget.set(vals[inp.name]);
      }
    }
    for (const l of wf.links || []) {
      const [id, fromId, fromSlot, toId, toSlot] = Array.isArray(l) ? l
        : [l.id, l.origin_id, l.origin_slot, l.target_id, l.target_slot];
      const from = byId.get(String(fromId));
      const to = byId.get(String(toId));
      if (!from || !to) continue;
      const srcInput = (to.src.inputs || [])[toSlot];
      const inp = srcInput ? to.node.inputs.find((i) => i.name === srcInput.name) : to.node.inputs[toSlot];
      const out = from.node.outputs[fromSlot];
      if (inp && out) connect(from.node, out, to.node, inp, typeof id === "number" ? id : undefined);
    }
    fitView();
    redrawLinks();
    emit("loaded", { nodes: state.nodes.size, links: state.links.size });
  }

  // Any JSON we understand: UI workflow, POST /prompt body, or bare API prompt.
  function loadJson(obj) {
    if (!obj || typeof obj !== "object") throw new Error("not a JSON object");
    if (Array.isArray(obj.nodes)) return loadWorkflow(obj);
    if (obj.prompt && typeof obj.prompt === "object") return loadApiPrompt(obj.prompt);
    if (Object.values(obj).some((n) => n && typeof n === "object" && n.class_type)) return loadApiPrompt(obj);
    throw new Error("neither an API-format prompt nor a workflow");
  }

  // ---------- PNG metadata (tEXt / iTXt chunks) ----------
  function pngTextChunks(buffer) {
    const bytes = new Uint8Array(buffer);
    const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
    if (bytes.length < 8 || sig.some((b, i) => bytes[i] !== b)) throw new Error("not a PNG file");
    const view = new DataView(buffer);
    const latin1 = new TextDecoder("iso-8859-1");
    const utf8 = new TextDecoder("utf-8");
    const out = {};
    let p = 8;
    while (p + 8 <= bytes.length) {
      const len = view.getUint32(p);
      const type = latin1.decode(bytes.subarray(p + 4, p + 8));
      const data = bytes.subarray(p + 8, p + 8 + len);
      if (type === "tEXt") {
        const z = data.indexOf(0);
        if (z > 0) out[latin1.decode(data.subarray(0, z))] = latin1.decode(data.subarray(z + 1));
      } else if (type === "iTXt") {
        const z = data.indexOf(0);
        if (z > 0 && data[z + 1] === 0) {
          let q = z + 3;
          const langEnd = data.indexOf(0, q);
          const transEnd = data.indexOf(0, langEnd + 1);
          if (langEnd >= 0 && transEnd >= 0) out[latin1.decode(data.subarray(0, z))] = utf8.decode(data.subarray(transEnd + 1));
          void q;
        }
      } else if (type === "IEND") break;
      p += 12 + len;
    }
    return out;
  }

  function loadPngBuffer(buffer) {
    const chunks = pngTextChunks(buffer);
    if (chunks.workflow) {
      try {
        const wf = JSON.parse(chunks.workflow);
        if (wf && Array.isArray(wf.nodes)) { loadWorkflow(wf); return "workflow"; }
      } catch (e) { console.warn("workflow chunk unreadable", e); }
    }
    if (chunks.prompt) { loadApiPrompt(JSON.parse(chunks.prompt)); return "prompt"; }
    throw new Error("this PNG has no odelt/ComfyUI workflow or prompt");
  }

  async function loadFile(file) {
    try {
      if (file.type === "image/png" || /\.png$/i.test(file.name)) {
        const how = loadPngBuffer(await file.arrayBuffer());
        message("Loaded the " + how + " from " + file.name);
      } else {
        loadJson(JSON.parse(await file.text()));
        message("Loaded " + file.name);
      }
    } catch (e) {
      message("Cannot load " + file.name + ": " + e.message, true);
    }
  }

  function setupFiles() {
    const canvas = document.body;
    canvas.addEventListener("dragover", (e) => { e.preventDefault(); $("canvas").classList.add("dropping"); });
    canvas.addEventListener("dragleave", () => $("canvas").classList.remove("dropping"));
    canvas.addEventListener("drop", (e) => {
      e.preventDefault();
      $("canvas").classList.remove("dropping");
      const f = e.dataTransfer && e.dataTransfer.files[0];
      if (f) loadFile(f);
    });
    $("load-input").addEventListener("change", (e) => {
      const f = e.target.files[0];
      if (f) loadFile(f);
      e.target.value = "";
    });
    $("save-btn").addEventListener("click", () => {
      const blob = new Blob([JSON.stringify(buildPrompt(), null, 2)], { type: "application/json" });
      const a = el("a", { href: URL.createObjectURL(blob), download: "workflow_api.json" });
      document.body.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    });
    $("clear-btn").addEventListener("click", () => clearGraph());
    $("fit-btn").addEventListener("click", () => { fitView(); redrawLinks(); });
  }

  // ---------- queueing and execution feedback ----------
  function clearRunState() {
    for (const n of state.nodes.values()) {
      n.el.classList.remove("running", "cached", "error");
      n.errorEl.textContent = "";
    }
  }

  async function queuePrompt() {
    clearRunState();
    const body = {
      prompt: buildPrompt(), client_id: state.clientId,
      extra_data: { extra_pnginfo: { workflow: buildWorkflow() } },
    };
    let r, data;
    try {
      r = await fetch(API + "/prompt", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      data = await r.json();
    } catch (e) {
      message("Queueing failed: " + e.message, true);
      return null;
    }
    if (!r.ok) {
      const err = data.error || {};
      let text = (err.message || "Prompt refused") + (err.details ? ": " + err.details : "");
      for (const [id, ne] of Object.entries(data.node_errors || {})) {
        const node = state.nodes.get(id);
        const lines = (ne.errors || []).map((x) => x.message + (x.details ? " — " + x.details : ""));
        if (node) { node.el.classList.add("error"); node.errorEl.textContent = lines.join("\n"); }
        text += "\n#" + id + " " + (ne.class_type || "") + ": " + lines.join("; ");
      }
      if (err.extra_info && err.extra_info.node_id && state.nodes.get(String(err.extra_info.node_id))) {
        state.nodes.get(String(err.extra_info.node_id)).el.classList.add("error");
      }
      message(text, true);
      emit("refused", data);
      return null;
    }
    state.promptIds.add(data.prompt_id);
    applyControls();
    message("Queued " + data.prompt_id.slice(0, 8));
    emit("queued", data);
    return data.prompt_id;
  }

  // After a queue: seeds set to increment/decrement/randomize change, within their range.
  function applyControls() {
    for (const node of state.nodes.values()) {
      for (const inp of node.inputs) {
        if (!inp.control || inp.link || inp.control.value === "fixed") continue;
        const o = specOpts(inp.spec);
        const lo = o.min !== undefined ? o.min : 0;
        const hi = Math.min(o.max !== undefined ? o.max : Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
        let v = inp.widget.get();
        if (inp.control.value === "increment") v = Math.min(hi, v + 1);
        else if (inp.control.value === "decrement") v = Math.max(lo, v - 1);
        else v = lo + Math.floor(Math.random() * (hi - lo + 1));
        inp.widget.set(v);
      }
    }
  }

  function nodeFor(id) { return id === null || id === undefined ? null : state.nodes.get(String(id)); }

  function showImages(node, images) {
    node.images.textContent = "";
    for (const im of images) {
      const q = new URLSearchParams({ filename: im.filename, subfolder: im.subfolder || "", type: im.type || "output" });
      const img = el("img", { src: API + "/view?" + q.toString() + "&t=" + Date.now(), alt: im.filename, title: im.filename });
      img.addEventListener("load", () => emit("image-loaded", { node: node.id, filename: im.filename, width: img.naturalWidth }));
      node.images.appendChild(img);
    }
    redrawLinks(node);
  }

  function showPreview(node, blob) {
    if (!node) return;
    const url = URL.createObjectURL(blob);
    let img = node.images.querySelector("img.preview");
    if (!img) {
      node.images.textContent = "";
      img = el("img", { class: "preview", alt: "preview" });
      node.images.appendChild(img);
    }
    const old = img.src;
    img.src = url;
    if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
    emit("preview", { node: node.id, size: blob.size });
  }

  function onMessage(msg) {
    const d = msg.data || {};
    const ours = !d.prompt_id || state.promptIds.has(d.prompt_id);
    switch (msg.type) {
      case "status": {
        const n = d.status && d.status.exec_info ? d.status.exec_info.queue_remaining : "?";
        $("status").textContent = "queue: " + n;
        break;
      }
      case "execution_start": if (ours) clearRunState(); break;
      case "execution_cached":
        if (ours) for (const id of d.nodes || []) { const n = nodeFor(id); if (n) n.el.classList.add("cached"); }
        break;
      case "executing": {
        for (const n of state.nodes.values()) n.el.classList.remove("running");
        const n = nodeFor(d.node);
        if (n) { n.el.classList.add("running"); n.el.classList.remove("cached"); state.lastProgressNode = n; }
        if (d.node === null) state.lastProgressNode = null;
        break;
      }
      case "progress": {
        const n = nodeFor(d.node);
        if (n) {
          n.progress.style.display = "block";
          n.progress.firstChild.style.width = (100 * d.value / Math.max(1, d.max)) + "%";
          state.lastProgressNode = n;
        }
        break;
      }
      case "executed": {
        const n = nodeFor(d.node);
        if (n && d.output) {
          if (Array.isArray(d.output.images)) showImages(n, d.output.images);
          if (Array.isArray(d.output.text)) n.text.textContent = d.output.text.join("\n");
        }
        break;
      }
      case "execution_error": {
        const n = nodeFor(d.node_id);
        if (n) { n.el.classList.add("error"); n.errorEl.textContent = d.exception_message || "error"; }
        message("Node #" + d.node_id + " (" + d.node_type + ") failed: " + d.exception_message, true);
        break;
      }
      case "execution_interrupted": message("Interrupted" + (d.node_id ? " at node #" + d.node_id : ""), false); break;
      case "execution_success":
        for (const n of state.nodes.values()) n.progress.style.display = "none";
        break;
      default: break;
    }
    emit(msg.type, d);
  }

  function onBinary(buf) {
    const view = new DataView(buf);
    if (buf.byteLength < 8) return;
    const type = view.getUint32(0);
    if (type === 1) {
      const mime = view.getUint32(4) === 2 ? "image/png" : "image/jpeg";
      showPreview(state.lastProgressNode, new Blob([buf.slice(8)], { type: mime }));
    } else if (type === 4) {
      const len = view.getUint32(4);
      let meta = {};
      try { meta = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, len))); } catch (e) { /* ignore */ }
      showPreview(nodeFor(meta.node_id) || state.lastProgressNode,
        new Blob([buf.slice(8 + len)], { type: meta.image_type || "image/png" }));
    } else if (type === 3) {
      const len = view.getUint32(4);
      const dec = new TextDecoder();
      const id = dec.decode(new Uint8Array(buf, 8, len));
      const n = nodeFor(id);
      if (n) n.text.textContent = dec.decode(new Uint8Array(buf, 8 + len));
    }
  }

  function connectSocket() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/ws?clientId=" + encodeURIComponent(state.clientId));
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "feature_flags", data: { supports_preview_metadata: true } }));
      emit("socket-open", {});
    });
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") {
        try { onMessage(JSON.parse(e.data)); } catch (err) { console.error(err); }
      } else onBinary(e.data);
    });
    ws.addEventListener("close", () => {
      $("status").textContent = "disconnected — retrying";
      setTimeout(connectSocket, 1000);
    });
  }

  // ---------- self-test (/?selftest=1): drives the UI through its own event handlers ----------
  function waitFor(pred, what, ms) {
    return new Promise((resolve, reject) => {
      const t0 = Date.now();
      const tick = () => {
        let v;
        try { v = pred(); } catch (e) { v = null; }
        if (v) return resolve(v);
        if (Date.now() - t0 > ms) return reject(new Error("timed out waiting for " + what));
        setTimeout(tick, 50);
      };
      tick();
    });
  }

  function pointer(type, target, x, y) {
    target.dispatchEvent(new PointerEvent(type, {
      bubbles: true, cancelable: true, clientX: x, clientY: y, pointerId: 1, button: 0, buttons: type === "pointerup" ? 0 : 1,
      isPrimary: true, pointerType: "mouse",
    }));
  }

  function center(e) {
    const r = e.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
  }

  function dragConnect(fromNode, outName, toNode, inName) {
    const out = fromNode.outputs.find((o) => o.name === outName);
    const inp = toNode.inputs.find((i) => i.name === inName);
    const a = center(out.socket), b = center(inp.row);
    pointer("pointerdown", out.socket, a.x, a.y);
    pointer("pointermove", window, (a.x + b.x) / 2, (a.y + b.y) / 2);
    pointer("pointermove", window, b.x, b.y);
    pointer("pointerup", window, b.x, b.y);
    return inp.link;
  }

  function clickPalette(type) {
    const before = new Set(state.nodes.keys());
    const item = document.querySelector('.palette-item[data-type="' + type + '"]');
    if (!item) throw new Error("palette has no " + type);
    item.click();
    const id = [...state.nodes.keys()].find((k) => !before.has(k));
    return state.nodes.get(id);
  }

  function setWidget(node, name, value) {
    const w = node.el.querySelector('[data-input="' + name + '"]');
    if (!w) throw new Error("node " + node.type + " has no widget " + name);
    if (w.type === "checkbox") w.checked = !!value; else w.value = String(value);
    w.dispatchEvent(new Event("input", { bubbles: true }));
    w.dispatchEvent(new Event("change", { bubbles: true }));
  }

  async function selftest() {
    const log = [];
    const seen = { progress: 0, preview: 0, executed: 0, images: 0 };
    state.listeners.push((type) => {
      if (type === "progress") seen.progress++;
      if (type === "preview") seen.preview++;
      if (type === "executed") seen.executed++;
      if (type === "image-loaded") seen.images++;
    });
    const result = el("div", { id: "selftest-result", "data-status": "running", text: "running" });
    document.body.appendChild(result);
    try {
      await waitFor(() => Object.keys(state.defs).length, "/object_info", 10000);
      await waitFor(() => state.ws && state.ws.readyState === 1, "the WebSocket", 10000);
      const need = ["GradientImage", "TestSaveImage", "SlowCount", "ShowNumber"];
      for (const t of need) if (!state.defs[t]) throw new Error("server has no " + t + " node");
      const img = clickPalette("GradientImage");
      const save = clickPalette("TestSaveImage");
      const slow = clickPalette("SlowCount");
      const show = clickPalette("ShowNumber");
      img.x = 0; img.y = 0; placeNode(img);
      save.x = 320; save.y = 0; placeNode(save);
      slow.x = 0; slow.y = 260; placeNode(slow);
      show.x = 320; show.y = 260; placeNode(show);
      setWidget(img, "width", 48);
      setWidget(img, "height", 32);
      setWidget(save, "filename_prefix", "selftest");
      setWidget(slow, "steps", 6);
      setWidget(slow, "step_ms", 60);
      setWidget(slow, "preview", true);
      // A typed socket refuses an IMAGE into an INT,FLOAT input.
      if (dragConnect(img, "IMAGE", show, "value")) throw new Error("IMAGE was connected to an INT,FLOAT input");
      if (!dragConnect(img, "IMAGE", save, "images")) throw new Error("could not connect IMAGE to images");
      if (!dragConnect(slow, "steps", show, "value")) throw new Error("could not connect steps to value");
      log.push("graph " + state.nodes.size + " nodes " + state.links.size + " links");
      const queued = new Promise((res) => state.listeners.push((t, d) => { if (t === "queued") res(d.prompt_id); }));
      $("queue-btn").click();
      const pid = await queued;
      await waitFor(() => seen.images > 0, "the output image", 30000);
      await waitFor(() => show.text.textContent === "6", "ShowNumber's text", 10000);
      const shown = save.images.querySelector("img");
      if (!shown || shown.naturalWidth !== 48) throw new Error("output image has width " + (shown && shown.naturalWidth));
      log.push("image " + shown.naturalWidth + "x" + shown.naturalHeight + " progress " + seen.progress + " previews " + seen.preview);
      if (seen.progress < 6) throw new Error("saw only " + seen.progress + " progress events");
      if (seen.preview < 1) throw new Error("saw no preview frame");
      // The PNG carries the workflow: restore it the way a dropped file is.
      const png = await (await fetch(shown.src)).arrayBuffer();
      const before = JSON.stringify(buildPrompt());
      clearGraph();
      if (state.nodes.size !== 0) throw new Error("clear failed");
      const how = loadPngBuffer(png);
      const after = JSON.stringify(buildPrompt());
      if (after !== before) throw new Error("restored graph differs: " + after + " vs " + before);
      log.push("restored from PNG " + how + " (" + state.nodes.size + " nodes, " + state.links.size + " links)");
      // Queue the restored graph: served from cache, its image is shown in place again.
      const imagesBefore = seen.images;
      $("queue-btn").click();
      await waitFor(() => seen.images > imagesBefore, "the cached output image", 30000);
      const restoredShow = [...state.nodes.values()].find((n) => n.type === "ShowNumber");
      await waitFor(() => restoredShow.text.textContent === "6", "the cached ShowNumber text", 10000);
      log.push("re-queued from cache");
      log.push("prompt " + pid);
      result.setAttribute("data-status", "pass");
      result.textContent = "PASS " + log.join("; ");
    } catch (e) {
      result.setAttribute("data-status", "fail");
      result.textContent = "FAIL " + e.message + " | " + log.join("; ");
    }
  }

  // ---------- the last graph (localStorage), the examples and the first graph ----------
  const STORE_KEY = "odelt.editor.workflow";
  const DEFAULT_TEMPLATE = "generate";
  let lastStored = null;

  function storeGraph() {
    if (!state.ready) return;
    let text;
    try { text = JSON.stringify(buildWorkflow()); } catch (e) { return; }
    if (text === lastStored) return;
    try { localStorage.setItem(STORE_KEY, text); lastStored = text; } catch (e) { /* full or disabled */ }
  }

  async function fetchTemplates() {
    try {
      const r = await fetch("/templates/index.json");
      if (!r.ok) return [];
      const cats = await r.json();
      return cats.flatMap((c) => c.templates || []);
    } catch (e) {
      return [];
    }
  }

  async function loadTemplate(name, source) {
    const r = await fetch("/templates/" + encodeURIComponent(name) + ".json");
    if (!r.ok) throw new Error("GET /templates/" + name + ".json failed: " + r.status);
    loadJson(await r.json());
    document.body.setAttribute("data-graph", source || "template:" + name);
  }

  function renderExamples(templates) {
    const menu = $("examples-menu");
    for (const t of templates) {
      menu.appendChild(el("option", { value: t.name, text: t.title || t.name, title: t.description || "" }));
    }
    menu.disabled = templates.length === 0;
    menu.addEventListener("change", () => {
      const name = menu.value;
      menu.value = "";
      if (name) loadTemplate(name).then(() => message("Loaded the example " + name)).catch((e) => message(e.message, true));
    });
  }

  // The graph of the last visit if there is one, else the default example (when this server
  // has its nodes and model).
  async function firstGraph(templates) {
    const stored = localStorage.getItem(STORE_KEY);
    if (stored) {
      try {
        loadJson(JSON.parse(stored));
        document.body.setAttribute("data-graph", "stored");
        lastStored = stored;
        return;
      } catch (e) {
        message("Your last graph could not be restored: " + e.message, true);
      }
    }
    if (templates.some((t) => t.name === DEFAULT_TEMPLATE)) {
      await loadTemplate(DEFAULT_TEMPLATE, "default");
    } else {
      document.body.setAttribute("data-graph", "empty");
    }
  }

  // ---------- start ----------
  function start() {
    setupCanvas();
    setupFiles();
    $("palette-search").addEventListener("input", (e) => renderPalette(e.target.value));
    $("queue-btn").addEventListener("click", () => queuePrompt());
    $("interrupt-btn").addEventListener("click", () => fetch(API + "/interrupt", { method: "POST" }));
    connectSocket();
    const selftesting = new URLSearchParams(location.search).get("selftest") === "1";
    Promise.all([loadDefs(), fetchTemplates()]).then(async ([, templates]) => {
      renderExamples(templates);
      // The self-test builds its own graph and leaves the stored one alone.
      if (!selftesting) {
        await firstGraph(templates);
        state.ready = true;
        setInterval(storeGraph, 1000);
        window.addEventListener("pagehide", storeGraph);
      }
    }).catch((e) => message(e.message, true));
    window.odeltEditor = { state, addNode, connect, buildPrompt, buildWorkflow, loadJson, loadPngBuffer, pngTextChunks, queuePrompt, storeGraph };
    if (selftesting) selftest();
  }

  start();
})();
