//! `blipmq-test-pki DIR`: write a throwaway PKI into DIR for the SDK suites
//! (the file names are `blipmq_testkit::files`). Test material only: the
//! keys are fresh on every run and never meant to leave the machine.

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: blipmq-test-pki DIR");
        std::process::exit(2);
    };
    let pki = blipmq_testkit::TestPki::write(std::path::Path::new(&dir));
    println!("{}", pki.dir.display());
}
