# The app pyrelctl generated the unit of (bench/capistrano.py installs it
# once with pyrelctl, then only Capistrano deploys it): its releases go
# under the same /opt/APP, its `current` is the one the unit runs.
set :application, ENV.fetch("BENCH_APP")
set :deploy_to, "/opt/#{fetch(:application)}"
set :tmp_dir, ENV.fetch("BENCH_TMP")
set :keep_releases, 5
set :format_options, log_file: ENV.fetch("BENCH_LOG")

namespace :deploy do
  desc "Restart the app's systemd unit"
  task :restart do
    on roles(:app) do
      # Deploys in quick succession trip the unit's start rate limit
      # (StartLimitBurst=5 per 10 s); pyrelctl and bench/floor.sh reset it
      # before each restart, and so does this task.
      execute :systemctl, "reset-failed", fetch(:unit)
      execute :systemctl, "restart", fetch(:unit)
    end
  end

  # deploy and deploy:rollback both run deploy:publishing (the symlink).
  after :publishing, :restart
end
