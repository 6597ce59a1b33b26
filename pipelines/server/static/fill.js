// The fill page: ODK Web Forms on one form; Send keeps the answers in the outbox first.
import { createApp, h } from "vue";
import { OdkWebForm, POST_SUBMIT__NEW_INSTANCE, webFormsPlugin } from "@getodk/web-forms";
import * as outbox from "./outbox.js";
import { config, showPending, showStatus } from "./status.js";

const cfg = config();
const refresh = () => showPending(cfg.submissionUrl);
// A portal page (signed in by its session cookie) sends the cookie and its CSRF token;
// a collection link's page never sends a cookie.
const credentials = cfg.csrfToken ? "same-origin" : "omit";
if (cfg.csrfToken) outbox.useCsrfToken(cfg.csrfToken, cfg.username);

// jr://file/x.csv, jr://file-csv/x.csv, jr://images/x.jpg: served beside the form.
function fetchFormAttachment(url) {
  const href = String(url && url.href ? url.href : url);
  const name = href.replace(/^jr:\/\/[^/]+\//, "").split("/").pop();
  return fetch(cfg.attachmentBaseUrl + encodeURIComponent(name), { credentials });
}

async function onSubmit(payload, callback) {
  const formData = payload.data[0];
  let item;
  try {
    item = await outbox.fromFormData(
      formData, cfg.submissionUrl, cfg.formTitle, !!cfg.csrfToken, cfg.username,
    );
    await outbox.put(item);
  } catch (err) {
    // Not saved: keep the answers on screen (no reset) and say so.
    console.error("manyi outbox", err);
    showStatus("未能在本机保存表单，请勿关闭此页，稍后再点“发送”。", "error");
    callback();
    return;
  }
  showStatus("已保存，正在发送…");
  try {
    await outbox.flush();
  } catch (err) {
    console.error("manyi outbox", err);
  }
  const after = await outbox.get(item.id);
  if (!after) {
    showStatus(`已提交：${cfg.formTitle}。可以填写下一份。`, "ok");
  } else if (after.status === "refused") {
    showStatus(`服务器未接收此表单：${after.message}。表单已保存在本机。`, "error");
  } else {
    const c = await outbox.counts(cfg.submissionUrl);
    showStatus(`已保存，待发送 ${c.pending} 份。有网络时自动发送，请勿清除浏览器数据。`, "warn");
  }
  await refresh();
  // The answers are in the server or the outbox: start a fresh form.
  callback({ next: POST_SUBMIT__NEW_INSTANCE });
  window.scrollTo(0, 0);
}

async function start() {
  const mount = document.getElementById("manyi-form");
  let formXml;
  try {
    const response = await fetch(cfg.formXmlUrl, { credentials });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    formXml = await response.text();
  } catch (err) {
    document.getElementById("manyi-loading").textContent =
      `无法加载表单（${err.message}），请检查网络后刷新页面。`;
    return;
  }
  mount.textContent = "";
  const props = {
    formXml,
    fetchFormAttachment,
    trackDevice: true,
    onSubmit,
  };
  if (cfg.username) props.preloadProperties = { username: cfg.username };
  createApp({ render: () => h(OdkWebForm, props) }).use(webFormsPlugin).mount(mount);
}

start();
outbox.keepSending(cfg.retryMs, refresh);
