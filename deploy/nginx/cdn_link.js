// The signed-link check of docs/cdn-signed-links.md at the edge, for nginx's njs module (0.7+):
//
//   env CDN_SECRET_K1;                      # nginx hands njs only the variables it names
//   env CDN_MAX_TTL_S;
//   js_import cdn from /etc/nginx/cdn_link.js;
//   js_set $cdn_link_status cdn.status;     # "200", "403" or "410"
//
// It answers as Keel's own check does (keel.core.signing.UrlSigner.verify), which
// tests/deploy/test_cdn_link_njs.py proves on links Keel signs.
import crypto from 'crypto';

// kid -> SECRET. During a rotation add the previous kid's secret; drop it one LINK_TTL_SEC later.
const KEYS = { k1: process.env.CDN_SECRET_K1 };
const CURRENT_KID = 'k1';            // what a link without kid= means (Keel's SECRET_KEY_ID)
// The longest TTL Keel signs for (LINK_TTL_SEC, or more if a service raised it): a link further
// ahead is refused whatever its signature, so a leaked key cannot mint a link for the year 33658.
const MAX_TTL_S = Number(process.env.CDN_MAX_TTL_S || 3600);
const SKEW_S = 30;
const SIG_LEN = 8;
const EXP = /^(0|[1-9][0-9]{0,11})$/;    // canonical decimal: one link, one spelling
const ASCII_SIG = /^[\x00-\x7f]{8}$/;

function one(value) {
    return typeof value === 'string' ? value : '';  // absent, or repeated (an array): not a link of ours
}

// Compares every character whatever differs first (njs has no crypto.timingSafeEqual).
function same(a, b) {
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
    return diff === 0;
}

function status(r) {
    const exp = one(r.args.exp), sig = one(r.args.sig), kid = one(r.args.kid) || CURRENT_KID;
    const key = Object.prototype.hasOwnProperty.call(KEYS, kid) ? KEYS[kid] : undefined;
    if (!EXP.test(exp) || !key || !ASCII_SIG.test(sig)) return '403';
    // Ours encoded and compared, never the client's decoded: decoders skip invalid characters.
    const mac = crypto.createHmac('sha256', key).update(`${kid}\n${r.uri}\n${exp}`).digest('base64url');
    if (!same(mac.slice(0, SIG_LEN), sig)) return '403';
    const now = Date.now() / 1000, expires = Number(exp);
    if (expires + SKEW_S < now) return '410';       // only after the signature: nothing leaks
    if (expires > now + MAX_TTL_S + SKEW_S) return '403';
    return '200';
}

export default { status };
