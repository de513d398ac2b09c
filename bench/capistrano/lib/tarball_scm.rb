# A Capistrano SCM plugin that deploys a release tarball instead of a git
# revision: upload it over SSH (scp), unpack it into the new release path.
# Capistrano's own tasks do the rest (the `current` symlink, cleanup,
# deploy:rollback, the revision log).
require "capistrano/scm/plugin"

class TarballScm < Capistrano::SCM::Plugin
  def set_defaults
    set_if_empty :tarball, -> { ENV.fetch("BENCH_TARBALL") }
  end

  def register_hooks
    after "deploy:new_release_path", "tarball:create_release"
    before "deploy:check", "tarball:check"
    before "deploy:set_current_revision", "tarball:set_current_revision"
  end

  def define_tasks
    namespace :tarball do
      task :check do
        run_locally { execute :test, "-f", fetch(:tarball) }
      end

      task :create_release do
        on release_roles(:all) do
          uploaded = "#{fetch(:tmp_dir)}/#{File.basename(fetch(:tarball))}"
          upload! fetch(:tarball), uploaded
          execute :mkdir, "-p", release_path
          execute :tar, "-xzf", uploaded, "-C", release_path
          execute :rm, "-f", uploaded
        end
      end

      task :set_current_revision do
        set :current_revision, File.basename(fetch(:tarball), ".tar.gz")
      end
    end
  end
end
