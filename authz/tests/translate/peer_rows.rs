//! PeerAuthentication precedence and portLevelMtls (protocol.md 9). Root namespace
//! `istio-system`; the workload is in `shop` labelled `app: cart` unless a row says otherwise.

use crate::{PA, PaRow};

const STATIC: &str = "istio-system/istio_converted_static_strict";
const CONVERTED: &str = "shop/converted_peer_authentication_cart";

pub const ROWS: &[PaRow] = &[
    PaRow {
        name: "no PeerAuthentication: permissive, nothing attached",
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "mesh STRICT",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false), (9090, false)],
        ..PA
    },
    PaRow {
        name: "mesh STRICT, namespace PERMISSIVE",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
"#,
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "mesh PERMISSIVE, namespace STRICT",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "namespace UNSET inherits mesh STRICT",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: UNSET}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "a namespace policy of another namespace does not apply",
        pas: r#"
metadata: {name: default, namespace: web}
spec: {mtls: {mode: STRICT}}
"#,
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "workload PERMISSIVE under namespace STRICT",
        pas: r#"
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: cart, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, mtls: {mode: PERMISSIVE}}
"#,
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "workload STRICT under nothing",
        pas: r#"
metadata: {name: cart, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, mtls: {mode: STRICT}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "workload DISABLE under mesh STRICT accepts plaintext",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: cart, namespace: shop}
spec: {selector: {matchLabels: {app: cart}}, mtls: {mode: DISABLE}}
"#,
        mode: "DISABLE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "a workload policy that does not select the workload is ignored",
        pas: r#"
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: other, namespace: shop}
spec: {selector: {matchLabels: {app: other}}, mtls: {mode: PERMISSIVE}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "selector policies in the root namespace are ignored",
        pas: r#"
metadata: {name: carts, namespace: istio-system}
spec: {selector: {matchLabels: {app: cart}}, mtls: {mode: STRICT}}
"#,
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "conflicting namespace policies: the older STRICT wins",
        pas: r#"
metadata: {name: b-newer, namespace: shop, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
---
metadata: {name: z-older, namespace: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "conflicting namespace policies: the older PERMISSIVE wins",
        pas: r#"
metadata: {name: a, namespace: shop, creationTimestamp: "2024-05-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: b, namespace: shop, creationTimestamp: "2023-12-31T23:59:59Z"}
spec: {mtls: {mode: PERMISSIVE}}
"#,
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    PaRow {
        name: "conflicting workload policies: the older wins",
        pas: r#"
metadata: {name: new, namespace: shop, creationTimestamp: "2024-02-01T10:00:00Z"}
spec: {selector: {matchLabels: {app: cart}}, mtls: {mode: PERMISSIVE}}
---
metadata: {name: old, namespace: shop, creationTimestamp: "2024-02-01T09:00:00Z"}
spec: {selector: {matchLabels: {app: cart}}, mtls: {mode: STRICT}}
"#,
        mode: "STRICT",
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "conflicting mesh policies: the older wins",
        pas: r#"
metadata: {name: one, namespace: istio-system, creationTimestamp: "2022-01-01T00:00:00Z"}
spec: {mtls: {mode: PERMISSIVE}}
---
metadata: {name: two, namespace: istio-system, creationTimestamp: "2023-01-01T00:00:00Z"}
spec: {mtls: {mode: STRICT}}
"#,
        mode: "PERMISSIVE",
        plaintext: &[(8080, true)],
        ..PA
    },
    // --- portLevelMtls --------------------------------------------------------------------
    PaRow {
        name: "workload STRICT with one PERMISSIVE port",
        pas: r#"
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: STRICT}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
"#,
        mode: "STRICT",
        ports: &[(8080, "PERMISSIVE")],
        keys: &[CONVERTED],
        plaintext: &[(8080, true), (9090, false)],
        ..PA
    },
    PaRow {
        name: "workload PERMISSIVE with one STRICT port",
        pas: r#"
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9090: {mode: STRICT}
"#,
        mode: "PERMISSIVE",
        ports: &[(9090, "STRICT")],
        keys: &[CONVERTED],
        plaintext: &[(8080, true), (9090, false)],
        ..PA
    },
    PaRow {
        name: "workload UNSET under mesh STRICT with a DISABLE port",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  portLevelMtls:
    "8080": {mode: DISABLE}
"#,
        mode: "STRICT",
        ports: &[(8080, "DISABLE")],
        keys: &[CONVERTED],
        plaintext: &[(8080, true), (9090, false)],
        ..PA
    },
    PaRow {
        name: "workload UNSET under namespace PERMISSIVE with a STRICT port",
        pas: r#"
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  portLevelMtls:
    9090: {mode: STRICT}
"#,
        mode: "PERMISSIVE",
        ports: &[(9090, "STRICT")],
        keys: &[CONVERTED],
        plaintext: &[(8080, true), (9090, false)],
        ..PA
    },
    PaRow {
        name: "all ports STRICT under a STRICT workload: only the static policy",
        pas: r#"
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9090: {mode: STRICT}
"#,
        mode: "STRICT",
        ports: &[(9090, "STRICT")],
        keys: &[STATIC],
        plaintext: &[(8080, false), (9090, false)],
        ..PA
    },
    PaRow {
        name: "PERMISSIVE ports under a PERMISSIVE workload: nothing attached",
        pas: r#"
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
"#,
        mode: "PERMISSIVE",
        ports: &[(8080, "PERMISSIVE")],
        plaintext: &[(8080, true), (9090, true)],
        ..PA
    },
    PaRow {
        name: "an UNSET port inherits the workload mode",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  portLevelMtls:
    8080: {mode: UNSET}
"#,
        mode: "STRICT",
        ports: &[(8080, "STRICT")],
        keys: &[STATIC],
        plaintext: &[(8080, false)],
        ..PA
    },
    PaRow {
        name: "workload PERMISSIVE with a STRICT port under mesh STRICT",
        pas: r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls:
    9090: {mode: STRICT}
"#,
        mode: "PERMISSIVE",
        ports: &[(9090, "STRICT")],
        keys: &[CONVERTED],
        plaintext: &[(8080, true), (9090, false)],
        ..PA
    },
    PaRow {
        name: "mixed ports under namespace STRICT",
        pas: r#"
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
---
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
    8081: {mode: DISABLE}
    9090: {mode: STRICT}
"#,
        mode: "STRICT",
        ports: &[(8080, "PERMISSIVE"), (8081, "DISABLE"), (9090, "STRICT")],
        keys: &[CONVERTED],
        plaintext: &[(8080, true), (8081, true), (9090, false), (7070, false)],
        ..PA
    },
];
