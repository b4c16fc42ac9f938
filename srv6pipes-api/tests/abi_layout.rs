//! The Rust mirror of the module ABI matches `include/srv6pipes_module.h` as gcc lays it out: a C
//! program compiled against the real header prints the size and alignment of every structure, the
//! offset of every member and the value of every constant, and each must equal Rust's.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use srv6pipes_api::abi::{self, FlowInfo, FuncDesc, ModuleDesc};

/// For each (C struct, Rust type, members): the C lines that print the layout, and Rust's values.
macro_rules! layouts {
    ($(($c:literal, $rust:ty, [$($field:ident),+ $(,)?])),+ $(,)?) => {{
        let mut c = String::new();
        let mut rust = BTreeMap::new();
        $(
            c += &format!("printf(\"{0} size %zu\\n\", sizeof(struct {0}));\n", $c);
            c += &format!("printf(\"{0} align %zu\\n\", _Alignof(struct {0}));\n", $c);
            rust.insert(format!("{} size", $c), size_of::<$rust>() as i64);
            rust.insert(format!("{} align", $c), align_of::<$rust>() as i64);
            $(
                let f = stringify!($field);
                c += &format!("printf(\"{0}.{1} %zu\\n\", offsetof(struct {0}, {1}));\n", $c, f);
                c += &format!("printf(\"{0}.{1} size %zu\\n\", sizeof(((struct {0} *)0)->{1}));\n", $c, f);
                rust.insert(format!("{}.{}", $c, f), offset_of!($rust, $field) as i64);
                rust.insert(format!("{}.{} size", $c, f), size_of_member(|x: &$rust| &x.$field) as i64);
            )+
        )+
        (c, rust)
    }};
}

/// Size of the member a projection selects.
fn size_of_member<T, M>(_: impl Fn(&T) -> &M) -> usize {
    size_of::<M>()
}

#[test]
fn rust_mirror_matches_the_c_header() {
    let (mut body, mut rust) = layouts!(
        (
            "srv6pipes_flow",
            FlowInfo,
            [size, worker, flow_id, client, server, client_port, server_port, reserved, sid, function, argument]
        ),
        ("srv6pipes_func", FuncDesc, [id, name, directions, flags, init, spawn, process, despawn, deinit]),
        ("srv6pipes_module", ModuleDesc, [abi_version, nfuncs, name, version, funcs]),
    );
    for (name, value) in [
        ("SRV6PIPES_ABI_VERSION", i64::from(abi::ABI_VERSION)),
        ("SRV6PIPES_UP", i64::from(abi::UP)),
        ("SRV6PIPES_DOWN", i64::from(abi::DOWN)),
        ("SRV6PIPES_DIR_UP", i64::from(abi::DIR_UP)),
        ("SRV6PIPES_DIR_DOWN", i64::from(abi::DIR_DOWN)),
        ("SRV6PIPES_DIR_BOTH", i64::from(abi::DIR_BOTH)),
        ("SRV6PIPES_EOF", i64::from(abi::FLAG_EOF)),
        ("SRV6PIPES_OK", i64::from(abi::OK)),
        ("SRV6PIPES_MORE", i64::from(abi::MORE)),
        ("SRV6PIPES_ERROR", i64::from(abi::ERROR)),
    ] {
        body += &format!("printf(\"{name} %lld\\n\", (long long)({name}));\n");
        rust.insert(name.to_string(), value);
    }
    body += "printf(\"symbol %s\\n\", SRV6PIPES_MODULE_SYMBOL);\n";

    let dir = std::env::temp_dir().join(format!("srv6pipes-api-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    let program = format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"srv6pipes_module.h\"\nint main(void) {{\n{body}return 0;\n}}\n"
    );
    std::fs::write(&src, program).unwrap();
    let include = Path::new(srv6pipes_api::HEADER).parent().unwrap();
    let cc = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("gcc is installed");
    assert!(cc.status.success(), "gcc: {}", String::from_utf8_lossy(&cc.stderr));
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();

    let text = String::from_utf8(out.stdout).unwrap();
    let mut c = BTreeMap::new();
    let mut symbol = None;
    for line in text.lines() {
        let (key, value) = line.rsplit_once(' ').unwrap();
        if key == "symbol" {
            symbol = Some(value.to_string());
        } else {
            c.insert(key.to_string(), value.parse::<i64>().unwrap());
        }
    }
    assert_eq!(symbol.as_deref(), abi::MODULE_SYMBOL.to_str().ok());
    assert_eq!(c.len(), rust.len(), "the C program printed {} values, Rust has {}", c.len(), rust.len());
    let diff: Vec<String> = rust
        .iter()
        .filter(|(k, v)| c.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: Rust {v}, C {:?}", c.get(k)))
        .collect();
    assert!(diff.is_empty(), "the Rust mirror differs from srv6pipes_module.h:\n{}", diff.join("\n"));
}
