# The operator's config repo (granted to the run as the resource "config-repo"), checked with the vendored
# Config::Tiny: every .ini file in it parses, has at least one section, and writes back to what it read.
use strict;
use warnings;
use File::Find ();
use Test::More;
use Config::Tiny;

my $repo = $ENV{EDGE_RUNNER_RESOURCE_CONFIG_REPO};
BAIL_OUT('the resource "config-repo" is not granted to this run') unless defined $repo && -d $repo;

my @files;
File::Find::find({ no_chdir => 1, wanted => sub { push @files, $File::Find::name if -f $_ && /\.ini\z/ } }, $repo);
@files = sort @files;
ok(scalar @files, 'the config repo holds .ini files');

for my $file (@files) {
  (my $name = $file) =~ s{\A\Q$repo\E/}{};
  subtest $name => sub {
    my $config = Config::Tiny->read($file, 'utf8');
    ok($config, 'parses') or return diag(Config::Tiny->errstr);
    ok(scalar(grep { $_ ne '_' } keys %$config), 'has at least one [section]');
    is_deeply(Config::Tiny->read_string($config->write_string), $config, 'writes back to what it read');
  };
}

done_testing;
