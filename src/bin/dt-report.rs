//! Host tool: describes a DTB with the kernel's device-tree module and prints the SMMU
//! report as JSON, so discovery can be checked against `dtc -I dtb -O dts` by hand.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: dt-report FILE.dtb");
        return ExitCode::from(2);
    };
    let blob = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("dt-report: cannot read {}: {e}", path.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    match kernel::dt::describe(&blob) {
        Ok(platform) => {
            print!("{}", kernel::dt::report_json(&platform));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dt-report: {}: {e}", path.to_string_lossy());
            ExitCode::from(2)
        }
    }
}
