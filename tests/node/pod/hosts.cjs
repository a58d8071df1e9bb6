// The "cluster DNS" of a pod-shaped test process: AMLID_POD_HOSTS (`host=ip:port,...`) sends TLS
// connections for the named hosts to local servers, keeping the name for SNI and certificate
// checks, so training code keeps its real URLs unmodified. Loaded with `node --require`.
"use strict";
const tls = require("tls");

const hosts = new Map();
for (const entry of (process.env.AMLID_POD_HOSTS || "").split(",").filter(Boolean)) {
  const [name, address] = entry.split("=");
  const at = address.lastIndexOf(":");
  hosts.set(name.trim().toLowerCase(), { host: address.slice(0, at), port: Number(address.slice(at + 1)) });
}

if (hosts.size > 0) {
  const connect = tls.connect;
  tls.connect = function (...args) {
    const options = args.find((a) => a && typeof a === "object");
    const target = options && options.host && hosts.get(String(options.host).toLowerCase());
    if (target) {
      options.servername = options.servername || options.host;
      options.host = target.host;
      options.port = target.port;
    }
    return connect.apply(this, args);
  };
}
