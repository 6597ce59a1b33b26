// The two notices both pages show: the last outcome, and 待发送 N 份 / refused forms.
import { counts } from "./outbox.js";

export function config() {
  return JSON.parse(document.getElementById("manyi-config").textContent);
}

export function showStatus(text, kind = "info") {
  const el = document.getElementById("manyi-status");
  el.textContent = text;
  el.dataset.kind = kind;
  el.hidden = !text;
}

export async function showPending(submissionUrl) {
  const el = document.getElementById("manyi-pending");
  let c;
  try {
    c = await counts(submissionUrl);
  } catch {
    el.textContent = "本浏览器无法保存表单（可能是无痕模式），请在普通模式下填写。";
    el.dataset.kind = "error";
    el.hidden = false;
    return;
  }
  const lines = [];
  if (c.pending) lines.push(`待发送 ${c.pending} 份（有网络时自动发送）`);
  for (const item of c.refused) {
    lines.push(`未被接收：${item.formTitle || ""}（${item.savedAt.slice(0, 10)}）：${item.message}。已保存在本机，请联系管理员。`);
  }
  el.textContent = lines.join("\n");
  el.dataset.kind = c.refused.length ? "error" : "info";
  el.hidden = lines.length === 0;
}
