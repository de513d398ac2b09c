# The booted systemd container of the bench, reached over SSH as root with
# a key and a known host key made for this run.
set :unit, "#{fetch(:application)}.service"
server "127.0.0.1", user: "root", roles: %w[app], port: Integer(ENV.fetch("BENCH_SSH_PORT"))
set :ssh_options, {
  keys: [ENV.fetch("BENCH_SSH_KEY")],
  keys_only: true,
  auth_methods: %w[publickey],
  user_known_hosts_file: ENV.fetch("BENCH_KNOWN_HOSTS"),
  verify_host_key: :always,
}
