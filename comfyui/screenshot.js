// Screenshot of ComfyUI's editor with a workflow loaded and the node library open on the odelt categories (docs/comfyui.png).
//   npm i playwright-core   # in some scratch folder; run with NODE_PATH=<that folder>/node_modules
//   node comfyui/screenshot.js http://127.0.0.1:8199/ comfyui/workflows/odelt_generate.json docs/comfyui.png lib
// Needs a running ComfyUI with odelt_nodes installed and /usr/bin/chromium.
const { chromium } = require('playwright-core');
const fs = require('fs');
(async () => {
  const [url, wfPath, out, lib] = process.argv.slice(2);
  const wf = JSON.parse(fs.readFileSync(wfPath, 'utf8'));
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run'] });
  const page = await browser.newPage({ viewport: { width: 1800, height: 1000 } });
  page.on('console', m => { if (m.type() === 'error') console.log('console:', m.text().slice(0, 300)); });
  await page.goto(url, { waitUntil: 'networkidle', timeout: 120000 });
  await page.waitForFunction(() => (window.app || (window.comfyAPI && window.comfyAPI.app && window.comfyAPI.app.app)) &&
    (window.app || window.comfyAPI.app.app).graph, null, { timeout: 120000 });
  await page.waitForTimeout(2000);
  await page.keyboard.press('Escape');
  await page.evaluate(async (wf) => {
    const app = window.app || window.comfyAPI.app.app;
    await app.loadGraphData(wf);
  }, wf);
  await page.waitForTimeout(1500);
  await page.keyboard.press('Escape');
  if (lib) {
    await page.getByText('Nodes', { exact: true }).first().click();
    await page.waitForTimeout(1500);
    const expand = async (label) => {
      const n = page.locator('.p-tree-node-content', { hasText: new RegExp('^\\s*' + label + '\\s*\\d*\\s*$') }).first();
      if (await n.count()) { await n.click({ timeout: 3000 }); await page.waitForTimeout(500); return true; }
      console.log('no tree node', label); return false;
    };
    await expand('odelt');
    for (const sub of ['loaders', 'model_patches', 'latent', 'sampling']) {
      const n = page.locator('.p-tree-node-content').filter({ hasText: new RegExp('^\\s*' + sub + '\\s*\\d*\\s*$') });
      const c = await n.count();
      // the first match under odelt: odelt's subtree comes after the odelt node
      if (c) { try { await n.last().click({ timeout: 3000 }); await page.waitForTimeout(400); } catch (e) { console.log('click', sub, e.message.slice(0, 80)); } }
    }
    await page.locator('.p-tree-node-content', { hasText: /^\s*odelt\s*\d*\s*$/ }).first().evaluate(e => e.scrollIntoView({ block: 'start' }));
    await page.evaluate(() => { const app = window.app || window.comfyAPI.app.app; app.canvas.ds.offset = [380, 60]; app.canvas.ds.scale = 0.72; app.canvas.setDirty(true, true); });
    await page.mouse.move(1700, 950);
    const texts = await page.locator('.p-tree-node-content').allInnerTexts();
    console.log('tree:', JSON.stringify(texts.slice(0, 60)));
  }
  await page.waitForTimeout(1000);
  await page.screenshot({ path: out });
  const titles = await page.evaluate(() => (window.app || window.comfyAPI.app.app).graph._nodes.map(n => n.type + ':' + n.title));
  console.log(JSON.stringify(titles));
  await browser.close();
})().catch(e => { console.error(e); process.exit(1); });
