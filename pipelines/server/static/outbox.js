// The outbox: filled forms kept in IndexedDB until the server answers 201/202.
// A form enters before it is sent and leaves only on the server's acceptance, so no signal,
// a server error or a closed tab never loses a cadre's answers (getodk/web-forms#461).

const DB_NAME = "manyi-outbox";
const STORE = "submissions";
const SEND_TIMEOUT_MS = 120000;
const OPENROSA_NS = "http://openrosa.org/http/response";

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let dbPromise = null;
function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const open = indexedDB.open(DB_NAME, 1);
      open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: "id" });
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
      open.onblocked = () => reject(new Error("IndexedDB blocked"));
    });
    dbPromise.catch(() => (dbPromise = null));
  }
  return dbPromise;
}

async function store(mode) {
  return (await db()).transaction(STORE, mode).objectStore(STORE);
}

// Resolves once the write is committed, not merely queued.
async function write(fn) {
  const tx = (await db()).transaction(STORE, "readwrite");
  const done = new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("IndexedDB transaction aborted"));
  });
  fn(tx.objectStore(STORE));
  return done;
}

export async function all() {
  return request((await store("readonly")).getAll());
}

export async function get(id) {
  return request((await store("readonly")).get(id));
}

export function put(item) {
  return write((s) => s.put(item));
}

export function remove(id) {
  return write((s) => s.delete(id));
}

function instanceId(xml) {
  try {
    const doc = new DOMParser().parseFromString(xml, "application/xml");
    const node = doc.getElementsByTagName("instanceID")[0];
    return node && node.textContent.trim();
  } catch {
    return "";
  }
}

// A portal page's CSRF token (the session's) and its login: items filled on a portal page are
// sent with the session cookie and this token. The token is never stored with the item (the
// one of the page that sends is used, so a form kept across a new login of the same person
// still goes), but the login is: on a shared phone, a form one person filled waits for that
// person's next login and is never sent as someone else.
let csrfToken = null;
let csrfLogin = null;
export function useCsrfToken(token, login) {
  csrfToken = token || null;
  csrfLogin = login || null;
}

// The FormData of Web Forms' submit payload as storable parts: the XML text, and each
// photo's bytes, name and type (Blobs in IndexedDB are not reliable on every phone browser).
// `session`: the item goes to a portal endpoint, with the session cookie and CSRF token.
export async function fromFormData(formData, submissionUrl, formTitle, session = false, owner = null) {
  let xml = null;
  let xmlName = "submission.xml";
  const files = [];
  for (const [name, value] of formData.entries()) {
    if (name === "xml_submission_file") {
      xml = typeof value === "string" ? value : await value.text();
      if (value.name && value.name !== "blob") xmlName = value.name;
    } else if (typeof value !== "string") {
      files.push({
        name: value.name || name,
        type: value.type || "application/octet-stream",
        bytes: await value.arrayBuffer(),
      });
    }
  }
  if (xml === null) throw new Error("the form gave no xml_submission_file");
  const uid = instanceId(xml) || `local:${Date.now()}-${Math.random().toString(16).slice(2)}`;
  return {
    id: uid,
    url: submissionUrl,
    formTitle,
    xml,
    xmlName,
    files,
    savedAt: new Date().toISOString(),
    status: "pending",
    message: "",
    session: !!session,
    owner: session ? owner : null,
  };
}

function serverMessage(text) {
  try {
    const doc = new DOMParser().parseFromString(text, "application/xml");
    const node = doc.getElementsByTagNameNS(OPENROSA_NS, "message")[0]
      || doc.getElementsByTagName("message")[0];
    if (node && node.textContent.trim()) return node.textContent.trim();
  } catch {
    // not XML: fall through
  }
  return text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 200);
}

// One POST as ODK Collect makes it. Outcome: "sent", "retry" (offline, timeout, 5xx, 408, 429,
// a captive portal's 200, a portal item's 401: signed out, sent once signed in again) or
// "refused" (any other 4xx: the server will not take it, so the item stays with the server's
// message and is not sent again).
async function send(item) {
  const body = new FormData();
  body.append("xml_submission_file", new Blob([item.xml], { type: "text/xml" }), item.xmlName);
  for (const f of item.files) body.append(f.name, new Blob([f.bytes], { type: f.type }), f.name);
  const headers = { "X-OpenRosa-Version": "1.0" };
  if (item.session) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(item.url, {
      method: "POST",
      body,
      headers,
      credentials: item.session ? "same-origin" : "omit",
      cache: "no-store",
      // a 301/302 would turn the POST into a GET and drop the form: never follow one
      redirect: "manual",
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
  } catch {
    return "retry";
  }
  if (response.status === 201 || response.status === 202) {
    await remove(item.id);
    return "sent";
  }
  const status = response.status;
  const text = await response.text().catch(() => "");
  const permanent = response.type === "opaqueredirect"
    || (status >= 400 && status < 500 && status !== 408 && status !== 429
      && !(item.session && status === 401));
  if (!permanent) return "retry";
  item.status = "refused";
  item.message = response.type === "opaqueredirect"
    ? "服务器把提交地址重定向了，请联系管理员检查链接"
    : serverMessage(text) || `HTTP ${status}`;
  item.refusedAt = new Date().toISOString();
  await put(item);
  return "refused";
}

async function sendAll() {
  const outcome = { sent: 0, retry: 0, refused: 0 };
  for (const item of await all()) {
    if (item.status !== "pending") continue;
    // a portal item waits for a portal page of the person who filled it
    if (item.session && (!csrfToken || (item.owner && item.owner !== csrfLogin))) continue;
    const result = await send(item);
    outcome[result] += 1;
    if (result === "retry") break; // the server is unreachable: the rest wait for the next try
  }
  return outcome;
}

// Serialised: one run at a time in this page (and across tabs where Web Locks exist), and a
// call made during a run gets one more run after it, so a form saved meanwhile goes too.
let tail = Promise.resolve();
let next = null;
export function flush() {
  if (next) return next;
  next = tail.then(() => {
    next = null;
    return navigator.locks ? navigator.locks.request(DB_NAME, sendAll) : sendAll();
  });
  tail = next.catch(() => {});
  return next;
}

export async function counts(submissionUrl) {
  const items = (await all()).filter((i) => !submissionUrl || i.url === submissionUrl);
  return {
    pending: items.filter((i) => i.status === "pending").length,
    refused: items.filter((i) => i.status === "refused"),
  };
}

// Retry on load, when the phone comes back online, and every retryMs.
export function keepSending(retryMs, onChange) {
  const run = async () => {
    try {
      await flush();
    } catch (err) {
      console.error("manyi outbox", err);
    }
    await onChange();
  };
  window.addEventListener("online", run);
  setInterval(run, retryMs);
  run();
}
