// The form list: shows 待发送 N 份 and sends what waits in this browser.
import { keepSending } from "./outbox.js";
import { config, showPending } from "./status.js";

const cfg = config();
keepSending(cfg.retryMs, () => showPending(cfg.submissionUrl));
