/* Softphone: the agent panel in a narrow layout, usable as a Salesforce Open CTI call center.
 *
 * Salesforce loads the softphone URL in its utility bar with `?sfdcIframeOrigin=<org>`
 * (and `mode=Lightning`); we then load Open CTI from that origin, so no third-party
 * CDN is involved, and bridge it:
 *   - sforce.opencti.enableClickToDial + onClickToDial: a click on a phone field in
 *     Salesforce dials through POST /api/v1/calls (window.CTIAgent.dial);
 *   - on each screen pop: sforce.opencti.screenPop to the matched record (SOBJECT) or a
 *     search for the number (SEARCH), and the softphone panel is made visible.
 * Outside Salesforce the page is simply a compact agent panel.
 */
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const sfOrigin = params.get("sfdcIframeOrigin");
  const API_VERSION = params.get("apiVersion") || "59.0";
  const SF_ID = /^(003|001|00Q)[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$/;

  function loadScript(src) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = () => reject(new Error(`cannot load ${src}`));
      document.head.appendChild(s);
    });
  }

  async function mountPanel() {
    // one markup for both pages: take the agent panel's body
    const r = await fetch("/static/agent.html", { cache: "no-cache" });
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    document.body.replaceChildren(...Array.from(doc.body.childNodes).map((n) => document.importNode(n, true)));
    document.body.dataset.mode = "softphone";
    await loadScript("/static/agent.js");
  }

  function bridge(opencti) {
    const log = (what) => (res) => { if (res && res.success === false) console.warn("opencti", what, res.errors); };
    opencti.enableClickToDial({ callback: log("enableClickToDial") });
    opencti.onClickToDial({
      listener: (payload) => {
        opencti.setSoftphonePanelVisibility({ visible: true, callback: log("setSoftphonePanelVisibility") });
        if (window.CTIAgent) window.CTIAgent.dial(payload.number);
      },
    });
    window.addEventListener("cti:pop", (ev) => {
      const pop = ev.detail;
      if (!pop || pop.update === undefined) return;
      const contact = pop.contact;
      opencti.setSoftphonePanelVisibility({ visible: true, callback: log("setSoftphonePanelVisibility") });
      if (contact && SF_ID.test(contact.id)) {
        opencti.screenPop({ type: opencti.SCREENPOP_TYPE.SOBJECT, params: { recordId: contact.id },
          callback: log("screenPop") });
      } else if (!pop.update || pop.lookup !== "pending") {
        const number = pop.customer_number || pop.from_number;
        if (number) {
          opencti.screenPop({ type: opencti.SCREENPOP_TYPE.SEARCH, params: { searchString: number },
            callback: log("screenPop") });
        }
      }
    });
    document.documentElement.dataset.opencti = "on";
  }

  async function start() {
    await mountPanel();
    if (!sfOrigin) return;
    let origin;
    try { origin = new URL(sfOrigin).origin; } catch (_) { return; }
    // only ever load Open CTI from Salesforce itself: this URL parameter comes from outside
    if (!/^https:\/\/[\w.-]+\.(force\.com|salesforce\.com)$/.test(origin)) {
      console.warn("softphone: sfdcIframeOrigin is not a Salesforce origin:", origin);
      return;
    }
    try {
      if (!(window.sforce && window.sforce.opencti)) {
        await loadScript(`${origin}/support/api/${API_VERSION}/lightning/opencti_min.js`);
      }
      if (window.sforce && window.sforce.opencti) bridge(window.sforce.opencti);
    } catch (e) {
      console.warn("softphone: Open CTI unavailable", e);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
