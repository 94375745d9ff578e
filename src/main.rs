fn main() {
    std::process::exit(shmcached::supervisor::main_entry());
}
