//! The Python `kubernetes` client does CRUD and watch on Deployments and ConfigMaps.

use std::process::Command;

use e2e::Kumo;

#[test]
fn python_client_crud_and_watch() -> anyhow::Result<()> {
    let have_client = Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_client {
        if std::env::var("KUMO_SKIP_PYTHON_TESTS").as_deref() == Ok("1") {
            eprintln!(
                "skipping: the Python kubernetes client is not installed and KUMO_SKIP_PYTHON_TESTS=1"
            );
            return Ok(());
        }
        anyhow::bail!(
            "the Python kubernetes client is missing: pip install kubernetes (or set KUMO_SKIP_PYTHON_TESTS=1)"
        );
    }
    let kumo = Kumo::start()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_test.py");
    let out = Command::new("python3")
        .arg(&script)
        .env("KUBECONFIG", kumo.kubeconfig())
        .output()?;
    assert!(
        out.status.success(),
        "python client test failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
