fn main() {
    std::process::exit(telespool::cli::main(std::env::args_os()));
}
