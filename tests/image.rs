//! The image: the Dockerfile builds the binaries `Cargo.toml` declares with the locked release
//! build, runs them as a non-root user on a distroless base, and what it packages starts. There
//! is no container engine here, so `make test` runs the Dockerfile's own build command first and
//! this test checks what it produced against the runtime image's contents.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).unwrap()
}

/// The Dockerfile's `cargo build` command, as `make test` runs it.
fn build_command() -> String {
    dockerfile()
        .lines()
        .find_map(|l| l.strip_prefix("RUN cargo build"))
        .map(|rest| format!("cargo build{rest}"))
        .expect("the Dockerfile builds with `RUN cargo build …`")
}

#[test]
fn the_dockerfile_builds_every_binary_locked_and_runs_them_as_non_root() {
    let command = build_command();
    assert!(
        command.contains("--release") && command.contains("--locked"),
        "{command}"
    );
    let declared = bins(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap());
    let built: Vec<String> = command
        .split("--bin ")
        .skip(1)
        .map(|b| b.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        built, declared,
        "the image builds other binaries than Cargo.toml declares"
    );
    let file = dockerfile();
    for bin in &built {
        assert!(
            file.contains(&format!(
                "COPY --from=build /src/target/release/{bin} /usr/local/bin/{bin}"
            )),
            "{bin} is built but not copied into the image"
        );
    }
    let runtime = file.lines().rfind(|l| l.starts_with("FROM ")).unwrap();
    assert!(
        runtime.contains("distroless") || runtime.contains("scratch"),
        "{runtime}"
    );
    let user = file
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER, which runAsNonRoot can verify");
    assert_ne!(uid, 0);
    assert!(file.contains(r#"ENTRYPOINT ["/usr/local/bin/aml-identity-operator"]"#));
    // Every workspace member is copied (cargo needs them all to build one).
    for member in ["emulator", "src"] {
        assert!(
            file.contains(&format!("COPY {member} {member}")),
            "{member}"
        );
    }
}

/// What the runtime base provides: glibc and the GCC runtime.
const DISTROLESS_CC: [&str; 9] = [
    "linux-vdso.so.1",
    "libc.so.6",
    "libm.so.6",
    "libgcc_s.so.1",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
];

fn release_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let path = dir.join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: `make test` runs `{}` first",
        path.display(),
        build_command()
    );
    path
}

#[test]
fn the_packaged_release_binaries_start_and_need_only_the_base_image() {
    for bin in ["aml-identity-operator", "kubectl-amlid"] {
        let path = release_binary(bin);
        let version = Command::new(&path).arg("--version").output().unwrap();
        assert!(version.status.success(), "{bin} --version");
        let version = String::from_utf8(version.stdout).unwrap();
        assert!(
            version.contains(env!("CARGO_PKG_VERSION")),
            "{bin}: {version}"
        );
        let help = Command::new(&path).arg("--help").output().unwrap();
        assert!(
            help.status.success() && !help.stdout.is_empty(),
            "{bin} --help"
        );
        let ldd = Command::new("ldd").arg(&path).output().expect("ldd");
        for line in String::from_utf8(ldd.stdout).unwrap().lines() {
            let lib = line.split_whitespace().next().unwrap_or_default();
            let lib = lib.rsplit('/').next().unwrap_or(lib);
            assert!(
                DISTROLESS_CC.contains(&lib),
                "{bin} needs {lib}, which distroless/cc lacks"
            );
        }
    }
    // The operator's `run` prints its flags, and without a namespace it refuses to start.
    let operator = release_binary("aml-identity-operator");
    let help = Command::new(&operator)
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8(help.stdout)
            .unwrap()
            .contains("--lease-namespace")
    );
    let refused = Command::new(&operator)
        .arg("run")
        .env_remove("POD_NAMESPACE")
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("cannot tell the operator's own namespace"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// The operator starts jemalloc with its own settings (src/main.rs), which the environment may
/// still override.
#[test]
fn the_operator_starts_its_allocator_with_one_arena_and_a_short_decay() {
    let operator = release_binary("aml-identity-operator");
    let shown = Command::new(&operator)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "confirm_conf:true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&shown.stderr);
    for set in ["narenas:1", "dirty_decay_ms:1000", "confirm_conf:true"] {
        assert!(
            stderr.contains(&format!("Set conf value: {set}")),
            "{set} not set: {stderr}"
        );
    }
}

/// The `[[bin]]` names of a Cargo manifest, read without a TOML crate (the manifest is ours).
fn bins(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name = ") {
            names.push(name.trim_matches('"').to_owned());
        }
    }
    names
}
